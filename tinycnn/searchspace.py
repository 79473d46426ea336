"""Search spaces as data, and one candidate drawn from a space (issue #16).

    space TOML --load_space--> SearchSpace --suggest(trial)--> arch at unit widths
    --fit_width--> the same arch filling the budget, + a Recipe

A space is ``experiments/spaces/<dataset>.toml``. ``[arch]`` describes a template, not a list
of networks: a stem, then ``stages`` stages separated by one downsampling block (``max`` or
``blur``); stage *s* has unit width ``base_width * width_growth**s`` and its own draw of every
``[arch.stage]`` key (``s1_kind``, ``s2_kind``, ...: blocks, kind among conv/sep/dw/ir/fir/rep-pair/
cnx, kernel, expansion, SE on its last block, ``_r`` residuals). ``[recipe]`` names a ``base``
recipe and the fields searched. In both tables a scalar is fixed, a list is a categorical
choice and ``{low, high[, log][, step][, grid]}`` is a range (recipe fields, and
``arch.budget_fraction``). Unknown keys, empty lists and bad ranges are refused with the key
and what it accepts (`SearchSpaceError`); so is a space with nothing to search.

**Widths are never searched**: every candidate goes through `budget.fit_width`, so it fills the
budget (deployed count). **A candidate that fits at no width is never trained**: `suggest`
records ``infeasible`` (the reason) and ``min_params`` as user attributes and raises
``optuna.TrialPruned``; so does one that fills the budget only with a block narrower than
``arch.min_width``, or whose drawn recipe values do not make a valid recipe together. A pruned
trial without reports is the worst kind for TPE, and NSGA-II builds its populations from
complete trials only, so no sampler learns from an infeasible candidate as if it had a score
(no ``constraints_func`` is needed), and no table lists one as a result.

**A recipe-only search**: ``[arch] fixed = "<phase>"`` (a phase of the dataset's ladder) or an
architecture string keeps the network as it is, widths included, and searches ``[recipe]``
alone: the incremental study "default recipe vs searched recipe on the same architecture".
``fixed`` takes no other ``[arch]`` key and no ``[arch.stage]``; a network over the budget is
infeasible like any candidate.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import optuna

from .budget import WidthFit, deployed_params, fit_width
from .datasets import dataset_info
from .errors import BudgetError, RecipeError, SpecError, TinyCNNError
from .ladders import get_phase, ladder
from .recipe import Recipe, load_recipe
from .results import REPO_ROOT
from .spec import PhaseSpec


class SearchSpaceError(TinyCNNError, ValueError):
    """A search-space TOML names an unknown key, an empty choice or a bad range."""


KINDS = ("conv", "sep", "dw", "ir", "fir", "rep-pair", "cnx")
_EXPANDS = ("ir", "fir", "cnx")
_TAKES_SE = ("conv", "sep", "dw", "ir", "fir")
_TAKES_R = ("conv", "sep", "dw")  # ir/fir add their input whenever shapes match, cnx always, rep* via identity BN
WIDTH_STEP, MAX_WIDTH = 0.01, 64.0  # fit_width's grid: unit widths x0.01 .. x64
GRID_LIMIT = 10_000  # grid points a `grid` sampler may enumerate
_DATA_KEYS = ("val_size", "split_seed", "train_subset", "seed")  # fixed in a space, never searched


@dataclass(frozen=True)
class Choice:
    values: tuple


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False
    grid: tuple = ()  # values for the grid sampler; () -> the (log-)midpoint

    def grid_values(self) -> list:
        if self.grid:
            return list(self.grid)
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.step:
            mid = self.low + round((mid - self.low) / self.step) * self.step
        return [round(mid) if self.integer else float(mid)]


@dataclass(frozen=True)
class Rule:
    accepts: str  # what one value may be, for error messages
    ok: Callable[[object], bool]
    searchable: bool = True  # a list of choices is allowed
    ranged: bool = False  # a {low, high} table is allowed


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


ARCH_RULES = {
    "base_width": Rule("an integer >= 1 (the stem's unit width)", lambda v: _int(v) and v >= 1, searchable=False),
    "multiple": Rule("an integer >= 1 (widths rounded to multiples of it)", lambda v: _int(v) and v >= 1,
                     searchable=False),
    "min_width": Rule("an integer >= 1 (a candidate that fills the budget only with a block narrower than "
                      "this is infeasible)", lambda v: _int(v) and v >= 1, searchable=False),
    "se_ratio": Rule("a number in (0, 1] (SE bottleneck / block width)", lambda v: _num(v) and 0 < v <= 1,
                     searchable=False),
    "stages": Rule("an integer >= 1", lambda v: _int(v) and v >= 1),
    "stem": Rule("conv or rep", lambda v: v in ("conv", "rep")),
    "downsample": Rule("max or blur", lambda v: v in ("max", "blur")),
    "width_growth": Rule("a number > 0", lambda v: _num(v) and v > 0),
    "budget_fraction": Rule("a number in (0, 1] (pareto objectives only)", lambda v: _num(v) and 0 < v <= 1,
                            ranged=True),
    "fixed": Rule("a phase of the dataset's ladder or an architecture string (then only [recipe] is searched)",
                  lambda v: isinstance(v, str) and bool(v.strip()), searchable=False),
}
STAGE_RULES = {
    "blocks": Rule("an integer 1..8", lambda v: _int(v) and 1 <= v <= 8),
    "kind": Rule(" or ".join(KINDS), lambda v: v in KINDS),
    "kernel": Rule("3, 5 or 7", lambda v: v in (3, 5, 7) and _int(v)),
    "expand": Rule("an integer 1..8 (ir/fir/cnx)", lambda v: _int(v) and 1 <= v <= 8),
    "se": Rule("true or false (SE on the stage's last block; conv/sep/dw/ir/fir)", lambda v: isinstance(v, bool)),
    "residual": Rule("true or false (_r on conv/sep/dw blocks whose shapes match)", lambda v: isinstance(v, bool)),
}
ARCH_DEFAULTS = {"base_width": 8, "multiple": 1, "min_width": 1, "se_ratio": 0.25, "stages": 3, "stem": "conv",
                 "downsample": "max", "width_growth": 1.0,
                 "budget_fraction": Range(0.25, 1.0, log=True), "fixed": None}
STAGE_DEFAULTS = {"blocks": 1, "kind": "sep", "kernel": 3, "expand": 4, "se": False, "residual": False}
_TOP_KEYS = ("description", "arch", "recipe", "start")


@dataclass(frozen=True)
class SearchSpace:
    path: str
    arch: dict  # key -> fixed value | Choice | Range
    stage: dict  # key -> fixed value | Choice
    base: str  # recipe name the samples override
    recipe: dict  # Recipe field -> fixed value | Choice | Range
    base_recipe: Recipe = field(compare=False, default=None)  # the base with the fixed values applied
    fixed_arch: str | None = None  # [arch] fixed: the one network of a recipe-only search
    fixed_phase: str | None = None  # ... and the ladder phase it names, if it named one
    start: dict = field(default_factory=dict)  # [start]: the first trial's values (a known-good point)

    @property
    def max_stages(self) -> int:
        return max(_values(self.arch["stages"]))

    @property
    def max_epochs(self) -> int:
        dim = self.recipe.get("epochs", self.base_recipe.epochs)
        return int(dim.high if isinstance(dim, Range) else max(_values(dim)))


def _values(dim) -> tuple:
    return dim.values if isinstance(dim, Choice) else (dim,)


def spaces_dir() -> Path:
    return REPO_ROOT / "experiments" / "spaces"


def load_space(path: str | os.PathLike | None, dataset: str) -> SearchSpace:
    """Read and check a space file (default ``experiments/spaces/<dataset>.toml``)."""
    dataset = dataset_info(dataset).name
    path = Path(path) if path else spaces_dir() / f"{dataset}.toml"
    if not path.is_file():
        raise SearchSpaceError(f"search space {path} not found; the shipped ones are in {spaces_dir()}")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SearchSpaceError(f"{path} is not valid TOML: {e}") from e
    _refuse_unknown(data, _TOP_KEYS, f"{path}: top-level key", "tables")
    arch_table = _table(data, "arch", f"{path}: [arch]")
    stage_table = _table(arch_table, "stage", f"{path}: [arch.stage]")
    arch_table.pop("stage", None)
    arch = _checked_table(arch_table, ARCH_RULES, ARCH_DEFAULTS, f"{path}: [arch]")
    stage = _checked_table(stage_table, STAGE_RULES, STAGE_DEFAULTS, f"{path}: [arch.stage]")
    fixed = _fixed_network(arch_table, stage_table, dataset, path) if arch["fixed"] is not None else (None, None)
    base, recipe, base_recipe = _checked_recipe(_table(data, "recipe", f"{path}: [recipe]"), dataset, path)
    space = SearchSpace(str(path), arch, stage, base, recipe, base_recipe, *fixed)
    space = replace(space, start=_checked_start(_table(data, "start", f"{path}: [start]"), space, path))
    if not any(isinstance(d, (Choice, Range)) for d in [*_searched_arch(space), *recipe.values()]):
        raise SearchSpaceError(f"{path} is an empty space: every key is fixed (or absent), so there is nothing "
                               f"to search; give at least one key a list of choices or a {{low, high}} range")
    if space.fixed_arch is None:
        _probe_layout(space, dataset)
    return space


def searched_dimensions(space: SearchSpace) -> dict:
    """Every name a trial may draw, with its dimension: recipe fields, arch keys, ``s<k>_<key>``."""
    dims = {}
    if space.fixed_arch is None:
        dims.update({k: space.arch[k] for k in ("stages", "width_growth", "stem", "downsample")})
        for s in range(1, space.max_stages + 1):
            dims.update({f"s{s}_{key}": dim for key, dim in space.stage.items()})
        dims["budget_fraction"] = space.arch["budget_fraction"]
    dims.update(space.recipe)
    return {k: d for k, d in dims.items() if isinstance(d, (Choice, Range))}


def _checked_start(table: dict, space: SearchSpace, path: Path) -> dict:
    """``[start]``: values for the study's first trial (Optuna's enqueue_trial), so a search
    begins at a known-good point, e.g. the recipe a final trains with. Each key must be a
    searched dimension and each value one it can draw."""
    dims = searched_dimensions(space)
    _refuse_unknown(table, dims, f"{path}: [start] key", "keys (the searched dimensions)")
    for key, value in table.items():
        dim = dims[key]
        ok = (value in dim.values if isinstance(dim, Choice) else
              _num(value) and dim.low <= value <= dim.high and (not dim.integer or _int(value)))
        if not ok:
            accepted = (", ".join(map(repr, dim.values)) if isinstance(dim, Choice)
                        else f"a number in [{dim.low}, {dim.high}]")
            raise SearchSpaceError(f"{path}: [start] {key} = {value!r} is not in the space; accepted: {accepted}")
    return {k: _as_drawn(dims[k], v) for k, v in table.items()}


def _as_drawn(dim, value):
    """The value as the dimension draws it (a float choice 0 is 0.0), so Optuna matches it."""
    if isinstance(dim, Choice):
        return dim.values[dim.values.index(value)]
    return value if dim.integer else float(value)


def _searched_arch(space: SearchSpace) -> list:
    if space.fixed_arch is not None:
        return []
    return [d for k, d in space.arch.items() if k != "budget_fraction"] + list(space.stage.values())


def _fixed_network(arch_table: dict, stage_table: dict, dataset: str, path: Path) -> tuple[str, str | None]:
    """``[arch] fixed``'s (architecture string, phase name or None), refusing what it leaves unused."""
    fixed = arch_table["fixed"].strip()
    others = sorted(set(arch_table) - {"fixed"}) + [f"[arch.stage] {k}" for k in sorted(stage_table)]
    if others:
        raise SearchSpaceError(f"{path}: [arch] fixed = {fixed!r} searches the recipe only, so {others[0]!r} "
                               f"would never be used; remove it (fixed takes no other [arch] key and no [arch.stage])")
    names = [p.name for p in ladder(dataset)] + ["final"]
    if fixed in names:
        phase = get_phase(dataset, fixed)
        return phase.arch, phase.name
    try:
        return PhaseSpec.from_arch("fixed", dataset, fixed).arch, None
    except SpecError as e:
        raise SearchSpaceError(f"{path}: [arch] fixed = {fixed!r} is neither a phase of the {dataset} ladder "
                               f"({', '.join(names)}) nor a valid architecture: {e}") from e


def _table(data: dict, key: str, where: str) -> dict:
    """A copy of the sub-table ``key``; {} when absent."""
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise SearchSpaceError(f"{where} must be a table of keys, got {table!r}")
    return dict(table)


def _refuse_unknown(table: dict, accepted, where: str, what: str = "keys") -> None:
    unknown = sorted(set(table) - set(accepted))
    if unknown:
        raise SearchSpaceError(f"{where} {unknown[0]!r} is unknown; accepted {what}: {', '.join(accepted)}")


def _checked_table(table: dict, rules: dict, defaults: dict, where: str) -> dict:
    _refuse_unknown(table, rules, f"{where} key")
    return {key: _dimension(key, table[key], rules[key], where) if key in table else defaults[key]
            for key in rules}


def _dimension(key: str, value, rule: Rule, where: str):
    """One key's value as a fixed value, a `Choice` or a `Range`, checked against ``rule``."""
    here = f"{where} {key}"
    if isinstance(value, dict):
        if not rule.ranged:
            raise SearchSpaceError(f"{here} takes no range; accepted: {rule.accepts}, or a list of them")
        return _range(value, here, integer=False, check=lambda v: rule.ok(v))
    if isinstance(value, list):
        if not rule.searchable:
            raise SearchSpaceError(f"{here} is fixed, not searched: give one value ({rule.accepts})")
        if not value:
            raise SearchSpaceError(f"{here} is an empty list of choices; accepted: a list of {rule.accepts}")
        bad = [v for v in value if not rule.ok(v)]
        if bad:
            raise SearchSpaceError(f"{here}: {bad[0]!r} is not accepted; accepted: {rule.accepts}")
        values = tuple(dict.fromkeys(value))
        return Choice(values) if len(values) > 1 else values[0]
    if not rule.ok(value):
        raise SearchSpaceError(f"{here}: {value!r} is not accepted; accepted: {rule.accepts}, or a list of them")
    return value


_RANGE_KEYS = ("low", "high", "log", "step", "grid")


def _range(table: dict, here: str, integer: bool, check: Callable[[object], bool]) -> Range:
    """A ``{low, high[, log][, step][, grid]}`` table; ``check`` tests each end and grid value."""
    _refuse_unknown(table, _RANGE_KEYS, f"{here}: range key")
    low, high = table.get("low"), table.get("high")
    valid = _int if integer else _num
    if not (valid(low) and valid(high) and low < high):
        kind = "integers" if integer else "numbers"
        raise SearchSpaceError(f"{here}: a range needs low < high, both {kind}; got low={low!r}, high={high!r}")
    log, step = table.get("log", False), table.get("step")
    if not isinstance(log, bool) or (log and low <= 0):
        raise SearchSpaceError(f"{here}: log must be true or false, and a log range needs low > 0 (got low={low})")
    if step is not None and (not valid(step) or step <= 0 or log):
        raise SearchSpaceError(f"{here}: step must be a {'whole ' if integer else ''}number > 0, "
                               f"and not given with log = true")
    grid = table.get("grid", [])
    if not isinstance(grid, list) or any(not valid(g) or not low <= g <= high for g in grid):
        raise SearchSpaceError(f"{here}: grid must be a list of values within [{low}, {high}]")
    for v in (low, high, *grid):
        if not check(v):
            raise SearchSpaceError(f"{here}: {v!r} is not an accepted value")
    return Range(low, high, log, step, integer, tuple(grid))


_RECIPE_FIELDS = {f.name: f for f in fields(Recipe)}


def _checked_recipe(table: dict, dataset: str, path: Path) -> tuple[str, dict, Recipe]:
    base = table.pop("base", "default")
    try:
        base_recipe = load_recipe(dataset, base) if isinstance(base, str) else None
    except RecipeError as e:
        raise SearchSpaceError(f"{path}: [recipe] base = {base!r}: {e}") from e
    if base_recipe is None:
        raise SearchSpaceError(f"{path}: [recipe] base must name a recipe of experiments/recipes/{dataset}.toml")
    _refuse_unknown(table, ["base", *(k for k in _RECIPE_FIELDS if k != "step_milestones")],
                    f"{path}: [recipe] key", "keys (base and Recipe fields)")
    dims = {key: _recipe_dimension(key, value, base_recipe, f"{path}: [recipe]") for key, value in table.items()}
    fixed = {key: dim for key, dim in dims.items() if not isinstance(dim, (Choice, Range))}
    try:  # every candidate starts from the base with the fixed values: val_size = 10000 sets the split
        start = replace(base_recipe, **fixed)
    except RecipeError as e:
        raise SearchSpaceError(f"{path}: [recipe] the fixed values {fixed} do not make a recipe with base "
                               f"{base!r}: {e}") from e
    return base, dims, start


def _recipe_dimension(key: str, value, base: Recipe, where: str):
    """A recipe field's dimension; every value is tried on the base recipe, so a bad one
    (``label_smoothing = [1.5]``) is refused here, not in the middle of a search."""
    kind = type(getattr(Recipe(), key))

    def ok(v) -> bool:
        typed = (isinstance(v, bool) if kind is bool else _int(v) if kind is int
                 else _num(v) if kind is float else isinstance(v, kind))
        if not typed:
            return False
        try:
            replace(base, **{key: float(v) if kind is float else v})
        except (RecipeError, TypeError):
            return False
        return True

    accepts = f"a {kind.__name__} the recipe accepts (see tinycnn.recipe.Recipe)"
    rule = Rule(accepts, ok, searchable=key not in _DATA_KEYS, ranged=kind in (int, float) and key not in _DATA_KEYS)
    if isinstance(value, dict) and rule.ranged:
        return _range(value, f"{where} {key}", integer=kind is int, check=ok)
    dim = _dimension(key, value, rule, where)
    if kind is float:
        dim = Choice(tuple(float(v) for v in dim.values)) if isinstance(dim, Choice) else float(dim)
    return dim


def _probe_layout(space: SearchSpace, dataset: str) -> None:
    """Refuse a stage count that downsamples the images away, before any trial draws it."""
    info = dataset_info(dataset)
    for down in _values(space.arch["downsample"]):
        arch = " ".join([f"conv_k3_c{space.arch['base_width']}"]
                        + ["sep_k3_c8"] + [f"{down} sep_k3_c8"] * (space.max_stages - 1) + ["gap"])
        try:
            PhaseSpec.from_arch("probe", dataset, arch)
        except SpecError as e:
            raise SearchSpaceError(f"{space.path}: [arch] stages = {space.max_stages} with downsample = {down} "
                                   f"shrinks {info.size}x{info.size} images too far ({e})") from e


# --- one candidate --------------------------------------------------------------------------

def _draw(trial, name: str, dim):
    """A fixed value as is; a choice or range through the trial, so the sampler sees it."""
    if isinstance(dim, Choice):
        return trial.suggest_categorical(name, list(dim.values))
    if isinstance(dim, Range):
        if dim.integer:
            return trial.suggest_int(name, dim.low, dim.high, step=dim.step or 1, log=dim.log)
        return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)
    return dim


def unit_arch(trial, space: SearchSpace) -> str:
    """The candidate's architecture string at unit widths: stem, stages, downsampling between."""
    a = space.arch
    base = a["base_width"]
    stages = _draw(trial, "stages", a["stages"])
    growth = _draw(trial, "width_growth", a["width_growth"])
    tokens, cin = [f"{_draw(trial, 'stem', a['stem'])}_k3_c{base}"], base
    for s in range(1, stages + 1):
        if s > 1:
            tokens.append(_draw(trial, "downsample", a["downsample"]))
        width = max(1, round(base * growth ** s))
        tokens += _stage(trial, space, s, cin, width)
        cin = width
    return " ".join(tokens + ["gap"])


def _stage(trial, space: SearchSpace, s: int, cin: int, width: int) -> list[str]:
    """Stage ``s``'s blocks; only the keys its kind uses are drawn (``s2_expand`` for ir/fir/cnx)."""
    st, p = space.stage, f"s{s}_"
    kind, n = _draw(trial, p + "kind", st["kind"]), _draw(trial, p + "blocks", st["blocks"])
    k = _draw(trial, p + "kernel", st["kernel"])
    e = _draw(trial, p + "expand", st["expand"]) if kind in _EXPANDS else 0
    se = _draw(trial, p + "se", st["se"]) if kind in _TAKES_SE else False
    res = _draw(trial, p + "residual", st["residual"]) if kind in _TAKES_R and (n > 1 or cin == width) else False
    bottleneck = max(1, round(width * space.arch["se_ratio"]))
    blocks = []
    for i in range(n):
        c_in = cin if i == 0 else width
        last = f"_se{bottleneck}" if se and i == n - 1 else ""
        if kind in ("conv", "sep", "dw"):
            blocks.append(f"{kind}_k{k}_c{width}{last}" + ("_r" if res and c_in == width else ""))
        elif kind in ("ir", "fir"):
            blocks.append(f"{kind}_k{k}_e{e}_c{width}{last}")
        elif kind == "rep-pair":
            blocks.append(f"repdw_k{k} reppw_c{width}")
        else:  # cnx keeps its input's channels: a 1x1 transition first when the width changes
            blocks += ([f"pw_c{width}"] if c_in != width else []) + [f"cnx_k{k}_e{e}"]
    return blocks


class _Infeasible(Exception):
    def __init__(self, reason: str, min_params: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.min_params = reason, min_params


def _fill_budget(spec: PhaseSpec, target: int, multiple: int, min_width: int = 1, ram_budget: int | None = None):
    """`fit_width` at the target (and within ``ram_budget`` bytes of planned activation arena),
    or `_Infeasible`: with the candidate's smallest deployed count when no width fits, or
    because it fits only with a block narrower than ``min_width``."""
    narrowest = deployed_params(spec.scaled(WIDTH_STEP, multiple))
    if narrowest > target:
        raise _Infeasible(f"needs {narrowest:,} parameters at its narrowest widths, over the budget of "
                          f"{target:,}", narrowest)
    try:
        fitted = fit_width(spec, target, step=WIDTH_STEP, max_width=MAX_WIDTH, multiple=multiple,
                           ram_budget=ram_budget)
    except BudgetError as e:
        raise _Infeasible(str(e), narrowest) from e
    thinnest = min(b.out for b in fitted.spec.blocks if b.out)
    if thinnest < min_width:
        raise _Infeasible(f"fills {target:,} parameters only at x{fitted.width} ({fitted.spec.arch}), where a "
                          f"block has {thinnest} channels, under min_width = {min_width}")
    return fitted


def _as_it_is(spec: PhaseSpec, target: int, ram_budget: int | None) -> WidthFit:
    """A fixed network is not widened: it fits the budget (and RAM) as it is, or is infeasible."""
    params = deployed_params(spec)
    if params > target:
        raise _Infeasible(f"the fixed network has {params:,} deployed parameters, over the budget of {target:,}",
                          params)
    if ram_budget is not None:
        from .memory import planned_arena_bytes

        arena = planned_arena_bytes(spec)
        if arena > ram_budget:
            raise _Infeasible(f"the fixed network plans a {arena:,} B activation arena, over the RAM budget of "
                              f"{ram_budget:,} B")
    return WidthFit(1.0, spec, params)


def suggest(trial, space: SearchSpace, dataset: str, budget: int, objective: str = "val",
            ram_budget: int | None = None) -> tuple[PhaseSpec, Recipe]:
    """Draw one candidate: an architecture widened to fill the budget, and a recipe.

    Pareto objectives also draw ``budget_fraction`` and fill that share of the budget, so the
    front spans sizes (filling the whole budget would put every candidate at one count). An
    infeasible candidate is recorded and pruned before any training (module docstring)."""
    target = budget
    if objective != "val":
        target = max(1, math.floor(budget * _draw(trial, "budget_fraction", space.arch["budget_fraction"])))
    unit = space.fixed_arch or unit_arch(trial, space)
    trial.set_user_attr("unit_arch", unit)
    if space.fixed_phase:
        trial.set_user_attr("phase", space.fixed_phase)
    try:
        spec = PhaseSpec.from_arch("search", dataset, unit)
        fitted = (_as_it_is(spec, target, ram_budget) if space.fixed_arch else
                  _fill_budget(spec, target, space.arch["multiple"], space.arch["min_width"], ram_budget))
        recipe, overrides = _sample_recipe(trial, space)
    except _Infeasible as e:
        trial.set_user_attr("infeasible", e.reason)
        if e.min_params is not None:
            trial.set_user_attr("min_params", e.min_params)
        raise optuna.TrialPruned(f"infeasible: {e.reason}") from None
    for key, value in {"arch": fitted.spec.arch, "params": fitted.params, "width": fitted.width,
                       "target_params": target, "recipe_base": space.base, "overrides": overrides}.items():
        trial.set_user_attr(key, value)
    return replace(fitted.spec, name=f"trial{trial.number}"), recipe


def _sample_recipe(trial, space: SearchSpace) -> tuple[Recipe, list[str]]:
    values = {key: _draw(trial, key, dim) for key, dim in space.recipe.items()}
    try:
        recipe = replace(space.base_recipe, **values)
    except RecipeError as e:  # each value was checked alone; this combination is not a recipe
        raise _Infeasible(f"recipe {values} is invalid: {e}") from e
    return recipe, [f"{key}={_setting(v)}" for key, v in values.items()]


def _setting(v) -> str:
    """A value as ``--set key=value`` spells it."""
    return ("true" if v else "false") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)



def grid_space(space: SearchSpace, objective: str = "val") -> dict[str, list]:
    """What ``grid`` means here: the Cartesian product of every list of choices, each range
    taking its ``grid`` values (its midpoint, geometric for log ranges, when it gives none).
    Per-stage keys appear once per stage. Keys a kind ignores (``s1_expand`` for sep) are in
    the grid too, so such points repeat a candidate; keep grid spaces small."""
    dims = searched_dimensions(space)
    if objective == "val":
        dims.pop("budget_fraction", None)
    grid = {k: list(d.values) if isinstance(d, Choice) else d.grid_values()
            for k, d in dims.items() if isinstance(d, (Choice, Range))}
    points = math.prod(len(v) for v in grid.values())
    if points > GRID_LIMIT:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in grid.items() if len(v) > 1)
        raise SearchSpaceError(f"{space.path}: the grid has {points:,} points, over {GRID_LIMIT:,} ({sizes}); "
                               f"use sampler tpe or random, or a space with fewer choices")
    return grid
