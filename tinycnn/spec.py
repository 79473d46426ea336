"""Architectures as data: a block is a short string, a phase is a list of blocks.

The grammar follows timm's block strings: a block kind, then ``_``-separated options.

    conv_k3_c16      k x k conv -> BN -> ReLU, 16 output channels (``_s2`` for stride 2)
    dw_k3_c32        depthwise k x k -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU
    dw_k3_c32_se4    ... then squeeze-excite with an explicit 4-channel bottleneck
    sep_k3_c32       depthwise k x k -> pointwise 1x1 -> BN -> ReLU (Xception's separable conv:
                     no norm or activation in between, which saves 2 parameters per input channel)
    pw_c16           1x1 conv -> BN -> ReLU (a cheap channel transition)
    max              2x2 max-pool, stride 2
    blur             anti-aliased max-pool: 2x2 max at stride 1, then a 3x3 binomial blur at stride 2
    drop_p10         dropout with p = 0.10 (given in percent so the string stays an identifier)
    sep_k3_c32_nsw   any conv block's activation: ``_nre`` ReLU (the default, not printed),
                     ``_nsw`` SiLU/swish, ``_nhs`` hard-swish (timm's ``n<act>`` option)

A phase's architecture is its blocks joined by spaces, ending with the head ``gap``
(global average pooling, then a linear classifier). Parsing and printing round-trip:
``parse_arch(format_arch(blocks)) == blocks``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .datasets import dataset_info
from .errors import SpecError

BLOCK_KINDS = {
    "conv": "k x k conv -> BN -> ReLU",
    "dw": "depthwise-separable: depthwise k x k -> BN -> ReLU -> 1x1 -> BN -> ReLU",
    "sep": "separable: depthwise k x k -> 1x1 -> BN -> ReLU (no norm/activation in between)",
    "pw": "1x1 conv -> BN -> ReLU",
    "max": "2x2 max-pool, stride 2",
    "blur": "anti-aliased max-pool (max 2x2 stride 1, binomial 3x3 blur stride 2)",
    "drop": "dropout, p in percent",
}
ACTIVATIONS = {"re": "ReLU", "sw": "SiLU (swish)", "hs": "hard-swish"}
HEADS = {"gap": "global average pooling -> linear classifier"}
_CONV_KINDS = ("conv", "dw", "sep", "pw")
_OPTIONS_BY_KIND = {
    "conv": {"k", "c", "s", "se"}, "dw": {"k", "c", "s", "se"},
    "sep": {"k", "c", "s", "se"}, "pw": {"c", "se"},
    "max": set(), "blur": set(), "drop": {"p"},
}
_OPTION = re.compile(r"^(k|c|s|se|p)(\d+)$")
_ACT_OPTION = re.compile(r"^n([a-z]+)$")
_GRAMMAR_HELP = (
    "accepted blocks: conv_k3_c16[_s2][_se4][_nsw], dw_k3_c32[_s2][_se4][_nsw], "
    "sep_k3_c32[_s2][_se4][_nsw], pw_c16[_se4][_nsw], max, blur, drop_p10; "
    f"activations: {', '.join('n' + a for a in ACTIVATIONS)}"
)


@dataclass(frozen=True)
class BlockSpec:
    """One block. ``out`` is 0 for blocks that keep the channel count (pools, dropout)."""

    kind: str
    out: int = 0
    kernel: int = 3
    stride: int = 1
    se: int = 0  # squeeze-excite bottleneck width; 0 = no SE
    drop: int = 0  # dropout probability in percent
    act: str = "re"  # activation of conv blocks, a key of ACTIVATIONS

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise SpecError(f"unknown block kind {self.kind!r}; {_GRAMMAR_HELP}")
        if self.kind in _CONV_KINDS and self.out < 1:
            raise SpecError(f"block {self.kind!r} needs an output width c>=1; {_GRAMMAR_HELP}")
        if self.kind == "drop" and not 0 < self.drop < 100:
            raise SpecError(f"dropout needs 0 < p < 100 (percent), got {self.drop}")
        if self.act not in ACTIVATIONS:
            raise SpecError(f"unknown activation n{self.act}; {_GRAMMAR_HELP}")
        if self.act != "re" and self.kind not in _CONV_KINDS:
            raise SpecError(f"block {self.kind!r} has no activation to set; {_GRAMMAR_HELP}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise SpecError(f"kernel size must be odd and >= 1, got k{self.kernel}")
        if self.stride not in (1, 2):
            raise SpecError(f"stride must be 1 or 2, got s{self.stride}")
        self._check_se()

    def _check_se(self) -> None:
        """SE squeezes the block's channels: a bottleneck wider than the block only adds parameters."""
        if self.se and self.kind not in _CONV_KINDS:
            raise SpecError(f"block {self.kind!r} takes no squeeze-excite option; {_GRAMMAR_HELP}")
        if self.se and not 1 <= self.se <= self.out:
            raise SpecError(f"block {str(self)!r}: squeeze-excite bottleneck se{self.se} must be "
                            f"1..{self.out} (at most the block's width c{self.out})")

    def __str__(self) -> str:
        if self.kind in ("max", "blur"):
            return self.kind
        if self.kind == "drop":
            return f"drop_p{self.drop}"
        parts = [self.kind]
        if self.kind != "pw":
            parts.append(f"k{self.kernel}")
        parts.append(f"c{self.out}")
        if self.stride != 1:
            parts.append(f"s{self.stride}")
        if self.se:
            parts.append(f"se{self.se}")
        if self.act != "re":
            parts.append(f"n{self.act}")
        return "_".join(parts)


def parse_block(text: str) -> BlockSpec:
    """Decode one block string such as ``dw_k3_c12_se2``."""
    kind, *options = text.strip().split("_")
    if kind not in BLOCK_KINDS:
        raise SpecError(f"unknown block {text!r}; {_GRAMMAR_HELP}")
    values: dict[str, int] = {}
    act = None
    for opt in options:
        a = _ACT_OPTION.match(opt)
        if a and act is None and kind in _CONV_KINDS:
            act = a.group(1)
            continue
        m = _OPTION.match(opt)
        if not m or m.group(1) in values:
            raise SpecError(f"bad option {opt!r} in block {text!r}; {_GRAMMAR_HELP}")
        values[m.group(1)] = int(m.group(2))
    allowed = _OPTIONS_BY_KIND[kind]
    for key in values:
        if key not in allowed:
            raise SpecError(f"option {key!r} does not apply to {kind!r} in {text!r}; {_GRAMMAR_HELP}")
    return BlockSpec(
        kind=kind,
        out=values.get("c", 0),
        kernel=values.get("k", 1 if kind == "pw" else 3),
        stride=values.get("s", 1),
        se=values.get("se", 0),
        drop=values.get("p", 0),
        act=act or "re",
    )


def parse_arch(text: str) -> tuple[tuple[BlockSpec, ...], str]:
    """Decode ``"conv_k3_c8 dw_k3_c12 max ... gap"`` into (blocks, head)."""
    tokens = text.split()
    if not tokens or tokens[-1] not in HEADS:
        raise SpecError(
            f"architecture {text!r} must end with a head; accepted heads: {', '.join(HEADS)}"
        )
    blocks = tuple(parse_block(t) for t in tokens[:-1])
    if not any(b.kind in _CONV_KINDS for b in blocks):
        raise SpecError(f"architecture {text!r} has no conv block; {_GRAMMAR_HELP}")
    return blocks, tokens[-1]


def format_arch(blocks: tuple[BlockSpec, ...], head: str = "gap") -> str:
    return " ".join([*(str(b) for b in blocks), head])


def min_input_size(block: BlockSpec) -> int:
    """The smallest square input, in pixels, the block's torch ops accept.

    A 2x2 max-pool needs 2x2. BlurPool's stride-1 2x2 max leaves h-1, and its reflect
    padding needs that >= 2 (the pad must be smaller than the input): 3x3. Convs pad
    k//2 and run on 1x1.
    """
    return {"max": 2, "blur": 3}.get(block.kind, 1)


def output_size(block: BlockSpec, h: int) -> int:
    """Side of the block's output for an h x h input, as the built modules compute it."""
    if block.kind == "max":
        return h // 2
    if block.kind == "blur":  # max 2x2 stride 1 (h-1), reflect pad 1 (h+1), 3x3 conv stride 2
        return (h - 1 + 2 - 3) // 2 + 1
    if block.kind in _CONV_KINDS:  # the 1x1 half of dw/sep and the SE gate keep the size
        return (h + 2 * (block.kernel // 2) - block.kernel) // block.stride + 1
    return h  # dropout


@dataclass(frozen=True)
class PhaseSpec:
    """A named architecture for one dataset, with the one-line change from the phase before."""

    name: str
    dataset: str
    blocks: tuple[BlockSpec, ...]
    change: str = ""
    head: str = "gap"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        dataset_info(self.dataset)  # raises on an unknown dataset
        if self.head not in HEADS:
            raise SpecError(f"unknown head {self.head!r}; accepted: {', '.join(HEADS)}")
        if not any(b.kind in _CONV_KINDS for b in self.blocks):
            raise SpecError(f"phase {self.name!r} has no conv block")
        self._check_spatial()

    def _check_spatial(self) -> None:
        """Refuse a layout that downsamples its images away: caught here, it would otherwise
        crash only at the first training step."""
        info = dataset_info(self.dataset)
        sizes = [info.size]
        for i, block in enumerate(self.blocks, 1):
            h, need = sizes[-1], min_input_size(block)
            if h < need:
                raise SpecError(
                    f"phase {self.name!r} downsamples {info.size}x{info.size} {info.name} images too far: "
                    f"block {i} of {len(self.blocks)} ('{block}') receives {h}x{h} pixels "
                    f"(sizes {' -> '.join(map(str, sizes))}) but needs at least {need}x{need}; "
                    f"accepted inputs: max >= 2x2, blur >= 3x3, conv blocks >= 1x1; "
                    f"remove a max/blur or stride-2 block")
            sizes.append(output_size(block, h))

    @classmethod
    def from_arch(cls, name: str, dataset: str, arch: str, change: str = "") -> "PhaseSpec":
        blocks, head = parse_arch(arch)
        return cls(name=name, dataset=dataset, blocks=blocks, change=change, head=head)

    @property
    def arch(self) -> str:
        return format_arch(self.blocks, self.head)

    @property
    def out_channels(self) -> int:
        return [b.out for b in self.blocks if b.kind in _CONV_KINDS][-1]

    def scaled(self, width: float, multiple: int = 1) -> "PhaseSpec":
        """The same phase with every width (and SE bottleneck) multiplied by ``width``.

        ``multiple`` rounds each block's width to the nearest multiple of it (at least one
        multiple): CPU kernels in channels_last vectorise over channels, and on this
        project's AVX-512 CPU widths in multiples of 8 trained 1.3-1.4x faster than
        10-14 (README, Training speed). Not timm's make_divisible, whose "never below 90%"
        bump would push nearly every width of a tiny net from 8-15 up to 16.
        SE bottlenecks are left unrounded (they are 1x1 convs on a 1x1 map), capped at the block's width.
        """
        if width <= 0:
            raise SpecError(f"width multiplier must be > 0, got {width}")
        if multiple < 1:
            raise SpecError(f"width multiple must be >= 1, got {multiple}")

        def scale(b: BlockSpec) -> BlockSpec:
            if b.kind not in _CONV_KINDS:
                return b
            out = max(multiple, round(b.out * width / multiple) * multiple)
            se = min(out, max(1, round(b.se * width))) if b.se else 0  # rounding out may undercut se
            return replace(b, out=out, se=se)

        return replace(self, blocks=tuple(scale(b) for b in self.blocks))

    def to_dict(self) -> dict:
        """Plain types only, so a model file can be opened with ``weights_only=True``."""
        return {"name": self.name, "dataset": self.dataset, "arch": self.arch, "change": self.change}

    @classmethod
    def from_dict(cls, d: dict) -> "PhaseSpec":
        try:
            fields = [d["name"], d["dataset"], d["arch"], d.get("change", "")]
        except (KeyError, TypeError, AttributeError) as e:
            raise SpecError(f"spec record {d!r} lacks name/dataset/arch") from e
        if not all(isinstance(f, str) for f in fields):
            raise SpecError(f"spec record {d!r}: name, dataset, arch and change must be strings")
        return cls.from_arch(*fields)
