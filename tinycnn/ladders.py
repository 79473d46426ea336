"""The MNIST and CIFAR-10 ladders: ordered phases, each one declared change from the last.

Reading a ladder top to bottom is the story of shrinking a CNN into its budget; the
difference between two consecutive architecture strings *is* the change. The final
phase of each ladder must fit the dataset's budget (tests assert it); intermediate
phases may be over, and `tinycnn phases` says by how much.
"""
from __future__ import annotations

from dataclasses import dataclass

from .datasets import dataset_info
from .errors import SpecError
from .spec import PhaseSpec

# Rows: (name, change, architecture[, recipe]); `Phase.from_row` turns each into a record.
_MNIST = [
    ("plain", "plain 3x3 convs (16-16-32-32-32), two max-pools, GAP + linear head",
     "conv_k3_c16 conv_k3_c16 max conv_k3_c32 conv_k3_c32 max conv_k3_c32 gap"),
    ("dw", "every conv after the stem becomes depthwise-separable (same widths)",
     "conv_k3_c16 dw_k3_c16 max dw_k3_c32 dw_k3_c32 max dw_k3_c32 gap"),
    ("paper", "the reference's widths 8-12-12-16-15 with 1x1 transitions (over budget once BN is counted)",
     "conv_k3_c8 dw_k3_c12 pw_c8 dw_k3_c12 max dw_k3_c16 pw_c12 max dw_k3_c15 gap"),
    ("sep", "depthwise-separable blocks become Xception-style separable convs: no BN/ReLU between "
     "depthwise and pointwise (saves 2 params per input channel)",
     "conv_k3_c8 sep_k3_c12 pw_c8 sep_k3_c12 max sep_k3_c16 pw_c12 max sep_k3_c15 gap"),
    ("slim", "last stages trimmed (16->15, 12->8) to fit 1,500 with room for SE",
     "conv_k3_c8 sep_k3_c12 pw_c8 sep_k3_c12 max sep_k3_c15 pw_c8 max sep_k3_c15 gap"),
    ("se", "squeeze-excite with a 2-channel bottleneck on the last block (+77 params)",
     "conv_k3_c8 sep_k3_c12 pw_c8 sep_k3_c12 max sep_k3_c15 pw_c8 max sep_k3_c15_se2 gap"),
    ("blur", "max-pools become BlurPool anti-aliased downsampling (zero parameters)",
     "conv_k3_c8 sep_k3_c12 pw_c8 sep_k3_c12 blur sep_k3_c15 pw_c8 blur sep_k3_c15_se2 gap"),
    ("deep", "the 1x1 transitions go; their parameters buy a second separable conv at 14x14 "
     "(widths 10-10-11-12-14; chosen on a 10K val split, experiments/LOG.md round 3)",
     "conv_k3_c8 sep_k3_c10 sep_k3_c10 blur sep_k3_c11 sep_k3_c12 blur sep_k3_c14_se2 gap"),
    ("sam", "the same network trained with SAM (rho 0.05, the `sam` recipe; chosen on a 10K val split, "
     "experiments/LOG.md round 4)",
     "conv_k3_c8 sep_k3_c10 sep_k3_c10 blur sep_k3_c11 sep_k3_c12 blur sep_k3_c14_se2 gap", "sam"),
    # Variants after the final (AFTER_FINAL), for noisy sensors: round R1 of experiments/LOG.md.
    ("std", "a zero-parameter per-image standardisation block in front (robustness to brightness/contrast; "
     "variant after the final)",
     "std conv_k3_c8 sep_k3_c10 sep_k3_c10 blur sep_k3_c11 sep_k3_c12 blur sep_k3_c14_se2 gap", "sam"),
    ("robust", "the same network trained with noise, blur and contrast augmentation (the `robust` recipe; "
     "chosen on corrupted val, experiments/LOG.md round R1)",
     "std conv_k3_c8 sep_k3_c10 sep_k3_c10 blur sep_k3_c11 sep_k3_c12 blur sep_k3_c14_se2 gap", "robust"),
]

_CIFAR10 = [
    ("plain", "plain 3x3 convs (32-32-64-64-64-60), two max-pools, GAP + linear head",
     "conv_k3_c32 conv_k3_c32 max conv_k3_c64 conv_k3_c64 max conv_k3_c64 conv_k3_c60 gap"),
    ("dw", "every conv after the stem becomes depthwise-separable (same widths)",
     "conv_k3_c32 dw_k3_c32 max dw_k3_c64 dw_k3_c64 max dw_k3_c64 dw_k3_c60 gap"),
    ("paper", "the reference's layout: convs 16-32-64-64, depthwise 128-192-260 at 8x8 and 4x4 (over budget)",
     "conv_k3_c16 conv_k3_c32 max conv_k3_c64 conv_k3_c64 max dw_k3_c128 dw_k3_c192 max dw_k3_c260 gap"),
    ("slim", "fourth conv 64->48 and last block 260->256 to fit 140,000",
     "conv_k3_c16 conv_k3_c32 max conv_k3_c64 conv_k3_c48 max dw_k3_c128 dw_k3_c192 max dw_k3_c256 gap"),
    ("se", "squeeze-excite (8-channel bottleneck) on the depthwise blocks, paid for by narrower ones",
     "conv_k3_c16 conv_k3_c32 max conv_k3_c64 conv_k3_c48 max dw_k3_c120_se8 dw_k3_c184_se8 max dw_k3_c232_se8 gap"),
    ("blur", "max-pools become BlurPool anti-aliased downsampling (zero parameters)",
     "conv_k3_c16 conv_k3_c32 blur conv_k3_c64 conv_k3_c48 blur dw_k3_c120_se8 dw_k3_c184_se8 blur dw_k3_c232_se8 gap"),
    ("long", "the same network trained 40 epochs with Cutout 8 px (the `long_cutout` recipe; chosen on val, "
     "experiments/LOG.md round C1)",
     "conv_k3_c16 conv_k3_c32 blur conv_k3_c64 conv_k3_c48 blur dw_k3_c120_se8 dw_k3_c184_se8 blur dw_k3_c232_se8 gap",
     "long_cutout"),
]

@dataclass(frozen=True)
class Phase:
    """One rung of a ladder: its name, the one change from the rung before, the network, and
    the recipe it trains with (a phase may change only the recipe, like MNIST's `sam`)."""

    name: str
    change: str
    spec: PhaseSpec
    recipe: str = "default"

    @classmethod
    def from_row(cls, dataset: str, name: str, change: str, arch: str, recipe: str = "default") -> "Phase":
        return cls(name, change, PhaseSpec.from_arch(name, dataset, arch, change), recipe)


PHASES: dict[str, tuple[Phase, ...]] = {
    dataset: tuple(Phase.from_row(dataset, *row) for row in rows)
    for dataset, rows in {"mnist": _MNIST, "cifar10": _CIFAR10}.items()
}
LADDERS: dict[str, tuple[PhaseSpec, ...]] = {d: tuple(p.spec for p in ps) for d, ps in PHASES.items()}


def phases(dataset: str) -> tuple[Phase, ...]:
    """The ladder's `Phase` records, largest first, final last."""
    return PHASES[dataset_info(dataset).name]


def recipe_for(phase: PhaseSpec) -> str:
    """The recipe a ladder phase trains with: `default` unless its ladder row names one
    (custom architectures train with `default` too)."""
    for record in PHASES.get(phase.dataset, ()):
        if record.name == phase.name:
            return record.recipe
    return "default"


@dataclass(frozen=True)
class AblationPlan:
    """Where a dataset's one-technique-at-a-time ablation starts, and how strong its
    augmentation steps are: declared beside the ladder it ablates, not branched on in code."""
    start_phase: str | None  # a phase of the ladder; None: the final without SE, with max-pools
    crop_pad: int
    flip: bool
    cutout: int


ABLATIONS: dict[str, AblationPlan] = {
    "mnist": AblationPlan(start_phase=None, crop_pad=2, flip=False, cutout=6),
    # CIFAR-10's `se` phase also narrowed its depthwise blocks to pay for SE, so removing SE
    # from the final would not give the architecture that SE was added to: start from `slim`.
    "cifar10": AblationPlan(start_phase="slim", crop_pad=4, flip=True, cutout=8),
}


def ablation_plan(dataset: str) -> AblationPlan:
    return ABLATIONS[dataset_info(dataset).name]


def ladder(dataset: str) -> tuple[PhaseSpec, ...]:
    """All phases of ``dataset``'s ladder, largest first, final last."""
    return LADDERS[dataset_info(dataset).name]


# Phases after the final: variants of it for one deployment need, kept in the ladder's story
# but not the network `final` names (nor the one exported, pruned and benchmarked as the final).
# MNIST's `std` and `robust` stay variants: tinycnn's C generator does not compile the `std`
# block's per-image reductions yet, and the final is what is exported to a microcontroller.
AFTER_FINAL: dict[str, frozenset[str]] = {"mnist": frozenset({"std", "robust"}), "cifar10": frozenset()}


def final_phase(dataset: str) -> PhaseSpec:
    """The ladder's final: its last phase that is not a variant after it (`AFTER_FINAL`)."""
    name = dataset_info(dataset).name
    return [p for p in ladder(name) if p.name not in AFTER_FINAL[name]][-1]


def get_phase(dataset: str, name: str) -> PhaseSpec:
    """A phase by name; ``final`` is `final_phase`."""
    phases = ladder(dataset)
    if name == "final":
        return final_phase(dataset)
    for phase in phases:
        if phase.name == name:
            return phase
    accepted = ", ".join([p.name for p in phases] + ["final"])
    raise SpecError(f"unknown phase {name!r} for {dataset}; accepted: {accepted}")


def phase_named_by(dataset: str, arch: str, recipe: str | None) -> str | None:
    """The ladder phase that is this network trained with this recipe, if one is: a model
    file records its network's name (`deep`), a user asks for the phase (`sam`)."""
    for phase in reversed(ladder(dataset)):
        if phase.arch == arch and recipe_for(phase) == (recipe or "default"):
            return phase.name
    return None


def previous_phase(phase: PhaseSpec) -> PhaseSpec | None:
    """The nearest phase before ``phase`` with a different architecture: the natural
    distillation teacher (a phase that only changes the recipe would teach its own network)."""
    phases = ladder(phase.dataset)
    names = [p.name for p in phases]
    i = names.index(phase.name) if phase.name in names else 0
    earlier = [p for p in phases[:i] if p.arch != phase.arch]
    return earlier[-1] if earlier else None
