"""A recipe is every training knob in one dataclass; named recipes live in TOML files.

``experiments/recipes/<dataset>.toml`` holds one table per named recipe. A table may say
``extends = "other"`` to start from another recipe of the same file. ``--set key=value``
overrides single fields on the command line, parsed by the field's type.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .augment import BACKENDS, AugmentConfig
from .averaging import AveragingConfig
from .errors import RecipeError
from .objective import ConsistencyConfig, DistillConfig
from .optim import OPTIMIZERS, SCHEDULES, OptimizerConfig, ScheduleConfig
from .stepper import AMP_MODES, StepConfig

# torch.compile's modes (the keys of torch._inductor.list_mode_options()).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

__all__ = ["AMP_MODES", "COMPILE_MODES", "OPTIMIZERS", "SCHEDULES", "Recipe", "apply_overrides", "load_recipe", "recipe_names"]


@dataclass(frozen=True)
class Recipe:
    # --- length and batch
    epochs: int = 20
    batch_size: int = 128
    # --- optimiser
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    no_bias_decay: bool = True  # no weight decay on biases and BN/SE affine params
    lookahead: bool = False  # Lookahead k=5, alpha=0.5 (optim.Lookahead, torch-optimizer's arithmetic)
    lr_scale_batch: int = 0  # if > 0, lr *= batch_size / lr_scale_batch (linear scaling rule)
    grad_clip: float = 0.0
    # --- schedule (stepped once per batch)
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0  # linear warmup for constant/cosine/step
    min_lr_ratio: float = 0.0  # floor of cosine and lower bound of CLR, as a fraction of lr
    step_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, for "step"
    step_gamma: float = 0.1
    clr_half_epochs: float = 2.0  # epochs from CLR's low to high point
    clr_mode: str = "triangular"  # or "triangular2": amplitude halves each cycle
    onecycle_pct: float = 0.25  # fraction of steps spent rising
    onecycle_div: float = 25.0  # start lr = lr / div
    onecycle_final_div: float = 1e4  # end lr = start lr / final_div
    # --- regularisation and augmentation
    label_smoothing: float = 0.0
    crop_pad: int = 0
    flip: bool = False
    flip_mode: str = "random"  # with flip: "random" per batch, or "alternate" (airbench: mirrored every other epoch)
    cutout: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_ramp_epochs: float = 0.0  # > 0: Mixup/CutMix's partner weight ramps from 0 to full over these epochs
    aug_backend: str = "tensor"
    # --- robustness (issue #18): corruption-like augmentation on the device, each off by
    # default (p = 0 / false leaves its op out, so it draws no random numbers). Noise, blur
    # and contrast go after crop/flip/Cutout, each per image with probability p at a strength
    # drawn per image; see tinycnn.augment (Gaussian noise is also a CIFAR-10-C family).
    noise_p: float = 0.0  # chance per image of Gaussian noise
    noise_std: float = 0.1  # largest noise sigma (of [0, 1] images); each image draws U(0, noise_std)
    blur_p: float = 0.0  # chance per image of a Gaussian blur
    blur_sigma: float = 1.0  # largest blur sigma in pixels; each image draws U(0.1, blur_sigma)
    contrast_p: float = 0.0  # chance per image of a contrast change towards its mean
    contrast_min: float = 0.2  # contrast factor ~ U(contrast_min, contrast_max) per image
    contrast_max: float = 1.0
    # AugMix (tinycnn.augmix), after Mixup/CutMix: each image a mix of augmix_width chains of
    # ops that leave out those overlapping CIFAR-10-C (contrast, color, brightness, sharpness)
    augmix: bool = False
    augmix_width: int = 3  # chains mixed per image (Dirichlet(augmix_alpha) weights)
    augmix_depth: int = -1  # ops per chain; -1: 1-3 at random per image and chain
    augmix_severity: int = 3  # op strength level, 1..10 (the paper's 3)
    augmix_alpha: float = 1.0  # Dirichlet and Beta(alpha, alpha) concentration
    augmix_jsd: bool = False  # train on (clean, AugMix, AugMix) views with the JSD consistency loss
    augmix_jsd_weight: float = 12.0  # lambda of the Jensen-Shannon term (the paper's 12)
    # --- initialisation (issue #19, after airbench / hlb-CIFAR10; see tinycnn.init): each off by
    # default, and neither draws a random number, so recipes without them train as before
    dirac_init: bool = False  # dense k x k convs with out >= in start as identity on their first `in` channels
    whiten_init: bool = False  # first conv = patch whitening of the training images, frozen for the run
    whiten_eps: float = 5e-4  # filter i is eigenvector i / sqrt(eigenvalue i + whiten_eps)
    # --- weight averaging
    swa: bool = False
    swa_start: float = 0.75  # fraction of epochs after which snapshots are averaged
    swa_lr: float = 0.0  # 0: keep the scheduled lr at swa_start; else SWALR anneals to it
    ema_decay: float = 0.0  # 0 disables; e.g. 0.999
    ema_warmup: bool = False  # EMA decay warm-up: min(ema_decay, (1 + n) / (10 + n)) after n updates
    # --- sharpness-aware minimisation
    sam_rho: float = 0.0  # 0 disables
    sam_adaptive: bool = False
    sam_gradient: str = "perturbed"  # or "sum": round 1's update, g(w) + g(w + e) (see stepper.SAM_GRADIENTS)
    # --- knowledge distillation
    kd_teacher: str = ""  # path to a model file, or "previous" for the ladder's previous phase
    kd_temperature: float = 4.0
    kd_alpha: float = 0.5  # weight of the distillation term
    # --- speed
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" records the step's kernels as CUDA graphs on a GPU,
    # where a tiny net's step is launch-bound (one replay instead of hundreds of launches)
    compile_mode: str = "default"
    eval_batch_size: int = 2000
    # --- data and reproducibility
    val_size: int = 5000
    split_seed: int = 0  # which random val_size images are held out; another seed = an independent val split
    train_subset: int = 0  # > 0: train on the first N training images (tests, smoke runs)
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs 2 samples)"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr_scale_batch >= 0, "lr_scale_batch must be >= 0 (0 disables the linear scaling rule)"),
            (self.aug_backend in BACKENDS, f"aug_backend must be one of {', '.join(BACKENDS)}"),
            (self.compile_mode in COMPILE_MODES, f"compile_mode must be one of {', '.join(COMPILE_MODES)}"),
            (self.compile or self.compile_mode == "default", "compile_mode applies only with compile = true"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.crop_pad >= 0 and self.cutout >= 0, "crop_pad and cutout must be >= 0 pixels (0 disables)"),
            (self.mixup_alpha >= 0 and self.cutmix_alpha >= 0, "mixup_alpha and cutmix_alpha must be >= 0 (0 disables)"),
            (0 <= self.mix_prob <= 1, "mix_prob must be a probability in [0, 1]"),
            (self.mix_ramp_epochs >= 0, "mix_ramp_epochs must be >= 0 (0: no ramp)"),
            (self.whiten_eps > 0, "whiten_eps must be > 0 (it keeps 1 / sqrt(eigenvalue + eps) finite)"),
            (self.val_size >= 0 and self.train_subset >= 0, "val_size and train_subset must be >= 0"),
            (self.split_seed >= 0 and self.seed >= 0, "seed and split_seed must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(f"invalid recipe: {message}")
        for f in fields(self):  # nan fails the range checks, but inf passes "lr > 0" and trains garbage
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise RecipeError(f"invalid recipe: {f.name} = {value} must be a finite number")
        for make_slice in (self.optimizer_config, self.schedule_config, self.step_config,
                           self.averaging_config, self.distill_config, self.augment_config,
                           self.consistency_config):
            make_slice()  # each slice checks its own fields and the rules between them

    def _slice(self, cls, **values):
        names = [f.name for f in fields(cls)]
        return cls(**{name: values[name] if name in values else getattr(self, name) for name in names})

    def optimizer_config(self) -> OptimizerConfig:
        return self._slice(OptimizerConfig, lr=self.effective_lr)

    def schedule_config(self) -> ScheduleConfig:
        return self._slice(ScheduleConfig)

    def step_config(self) -> StepConfig:
        return self._slice(StepConfig)

    def averaging_config(self) -> AveragingConfig:
        return self._slice(AveragingConfig)

    def distill_config(self) -> DistillConfig:
        return self._slice(DistillConfig)

    def consistency_config(self) -> ConsistencyConfig:
        return self._slice(ConsistencyConfig)

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_scale_batch if self.lr_scale_batch else self.lr

    def augment_config(self) -> AugmentConfig:
        return self._slice(AugmentConfig, backend=self.aug_backend)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["step_milestones"] = list(self.step_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise RecipeError(f"unknown recipe field(s) {sorted(unknown)}; accepted: {', '.join(f.name for f in fields(cls))}")
        d = {name: _checked_type(name, value) for name, value in d.items()}
        try:
            return cls(**d)
        except TypeError as e:
            raise RecipeError(f"invalid recipe: {e}") from e


_FIELDS = {f.name: f for f in fields(Recipe)}
_DEFAULTS = Recipe()


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# What a recipe file's value of each field type must be (TOML and JSON give no dataclass types).
_TYPE_CHECKS = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", _number),
    str: ("a string", lambda v: isinstance(v, str)),
    tuple: ("a list of numbers", lambda v: isinstance(v, (list, tuple)) and all(map(_number, v))),
}


def _checked_type(name: str, value):
    """``value`` for field ``name`` from a recipe file or record, refused unless it has the field's
    type: ``epochs = 2.5`` or ``flip = "no"`` would otherwise train something else than asked."""
    kind = type(getattr(_DEFAULTS, name))
    words, ok = _TYPE_CHECKS[kind]
    if not ok(value):
        raise RecipeError(f"invalid recipe: {name} = {value!r} must be {words}")
    return tuple(float(v) for v in value) if kind is tuple else value


def _parse_value(name: str, text: str):
    f = _FIELDS.get(name)
    if f is None:
        raise RecipeError(f"unknown recipe field {name!r}; accepted: {', '.join(_FIELDS)}")
    kind = type(getattr(Recipe(), name))
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes", "on")
        if kind is tuple:
            return tuple(float(v) for v in text.split(",") if v)
        return kind(text)
    except ValueError:
        raise RecipeError(f"--set {name}={text}: expected a {kind.__name__}") from None


def apply_overrides(recipe: Recipe, overrides: list[str] | None) -> Recipe:
    """Apply ``key=value`` strings (``--set``) to a recipe, type-checked per field."""
    changes = {}
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        changes[key.strip()] = _parse_value(key.strip(), value.strip())
    try:
        return replace(recipe, **changes)
    except TypeError as e:
        raise RecipeError(str(e)) from e


def recipes_dir() -> Path:
    """``$TINYCNN_RECIPES`` or the repository's ``experiments/recipes``."""
    env = os.environ.get("TINYCNN_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "experiments" / "recipes"


def recipe_names(dataset: str) -> list[str]:
    path = recipes_dir() / f"{dataset}.toml"
    if not path.exists():
        return []
    with open(path, "rb") as f:
        return list(tomllib.load(f))


def load_recipe(dataset: str, name: str = "default", overrides: list[str] | None = None) -> Recipe:
    """A named recipe of ``dataset`` (or a path to a TOML file with one table), plus overrides."""
    if name.endswith(".toml") or os.sep in name:
        path, table = Path(name), None
    else:
        path, table = recipes_dir() / f"{dataset}.toml", name
    if not path.is_file():
        raise RecipeError(f"recipe file {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as f:
            tables = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path} is not valid TOML: {e}") from e
    if table is None:
        values = tables
    else:
        values = _resolve(tables, table, path, seen=())
    recipe = Recipe.from_dict({k: v for k, v in values.items() if k != "extends"})
    return apply_overrides(recipe, overrides)


def _resolve(tables: dict, name: str, path: Path, seen: tuple) -> dict:
    if name not in tables:
        raise RecipeError(f"no recipe {name!r} in {path}; accepted: {', '.join(tables)}")
    if name in seen:
        raise RecipeError(f"recipe {name!r} in {path} extends itself in a cycle")
    values = dict(tables[name])
    parent = values.pop("extends", None)
    if parent:
        values = {**_resolve(tables, parent, path, seen + (name,)), **values}
    return values

