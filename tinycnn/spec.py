"""Architectures as data: a block is a short string, a phase is a list of blocks.

The grammar follows timm's block strings: a block kind, then ``_``-separated options.

    conv_k3_c16      k x k conv -> BN -> ReLU, 16 output channels (``_s2`` for stride 2)
    dw_k3_c32        depthwise k x k -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU
    dw_k3_c32_se4    ... then squeeze-excite with an explicit 4-channel bottleneck
    sep_k3_c32       depthwise k x k -> pointwise 1x1 -> BN -> ReLU (Xception's separable conv:
                     no norm or activation in between, which saves 2 parameters per input channel)
    pw_c16           1x1 conv -> BN -> ReLU (a cheap channel transition)
    conv_k3_c16_r    ``_r`` on conv/dw/sep/pw: add the block's input to its output (a residual,
                     zero parameters); only where the shapes match: stride 1 and c = input channels
    ir_k3_e4_c16     inverted residual (MobileNetV2/V3 MBConv): 1x1 expand to e x the input
                     channels (e1: no expand conv) -> depthwise k x k [-> SE at the expanded
                     width, ``_se4``] -> 1x1 project -> BN, no activation; + input when the shapes
                     match. e in 1..8, k in 3/5/7
    fir_k3_e4_c16    fused MBConv (EfficientNetV2): k x k conv expanding to e x input -> BN -> act
                     [-> SE] -> 1x1 project -> BN, no activation; + input when the shapes match
    cnx_k7_e4        ConvNeXt block, keeps its input's channels (no ``c``): depthwise k x k -> BN
                     -> 1x1 expand x e -> act -> 1x1 project -> layer scale, + input always
    cnx_k3k7_e4      ... with mixed depthwise kernels (MixConv): the channels split into one
                     group per kernel (3 and 7 here), listed once each, smallest first
    rep_k3_c16       RepVGG: k x k conv+BN + 1x1 conv+BN (+ identity BN when c = input channels
                     and stride 1), summed, then act; fuses into one k x k conv with bias
    repdw_k3         MobileOne depthwise: the same three branches, depthwise; keeps channels
    reppw_c16        MobileOne pointwise: 1x1 conv+BN (+ identity BN when c = input channels)
    max              2x2 max-pool, stride 2
    blur             anti-aliased max-pool: 2x2 max at stride 1, then a 3x3 binomial blur at stride 2
    drop_p10         dropout with p = 0.10 (given in percent so the string stays an identifier)
    std              per-image standardisation, each channel over its pixels: (x - mean) / (std
                     + eps); zero parameters, usually first (robustness to brightness/contrast)
    sep_k3_c32_nsw   any conv block's activation: ``_nre`` ReLU (the default, not printed),
                     ``_nr6`` ReLU6, ``_nsw`` SiLU/swish, ``_nhs`` hard-swish, ``_nge`` GELU
                     (timm's ``n<act>`` option)

Mixed kernels are written ``k3k7`` rather than timm's ``k3.7`` so that every block string
stays an identifier (the reason ``drop_p10`` is in percent). timm's ``r<n>`` (repeat a
block n times) has no place here: one string is one block, so ``_r`` is the residual flag.
A string prints its options in one order, ``kind_k_e_c_s_se_r_n``.

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
    "ir": "inverted residual (MBConv): 1x1 expand -> depthwise k x k [-> SE] -> 1x1 project -> BN",
    "fir": "fused MBConv: k x k expand -> BN -> act [-> SE] -> 1x1 project -> BN",
    "cnx": "ConvNeXt: depthwise k x k -> BN -> 1x1 expand -> act -> 1x1 project -> layer scale, + input",
    "rep": "RepVGG: k x k conv+BN + 1x1 conv+BN (+ identity BN) -> act; fuses into one conv",
    "repdw": "MobileOne depthwise: k x k dw+BN + 1x1 dw+BN (+ identity BN) -> act; keeps channels",
    "reppw": "MobileOne pointwise: 1x1 conv+BN (+ identity BN) -> act",
    "max": "2x2 max-pool, stride 2",
    "blur": "anti-aliased max-pool (max 2x2 stride 1, binomial 3x3 blur stride 2)",
    "drop": "dropout, p in percent",
    "std": "per-image standardisation: each channel (x - mean) / (std + eps) over its pixels, 0 params",
}
ACTIVATIONS = {"re": "ReLU", "r6": "ReLU6", "sw": "SiLU (swish)", "hs": "hard-swish", "ge": "GELU"}
HEADS = {"gap": "global average pooling -> linear classifier"}
# Kinds with weights (at least one of them makes a network); the rest are pools and dropout.
_CONV_KINDS = ("conv", "dw", "sep", "pw", "ir", "fir", "cnx", "rep", "repdw", "reppw")
_OPTIONS_BY_KIND = {
    "conv": {"k", "c", "s", "se", "r", "n"}, "dw": {"k", "c", "s", "se", "r", "n"},
    "sep": {"k", "c", "s", "se", "r", "n"}, "pw": {"c", "se", "r", "n"},
    "ir": {"k", "e", "c", "s", "se", "n"}, "fir": {"k", "e", "c", "s", "se", "n"},
    "cnx": {"k", "e", "n"}, "rep": {"k", "c", "s", "n"}, "repdw": {"k", "s", "n"}, "reppw": {"c", "n"},
    "max": set(), "blur": set(), "drop": {"p"}, "std": set(),
}
_NEEDS = {"c": {"conv", "dw", "sep", "pw", "ir", "fir", "rep", "reppw"}, "e": {"ir", "fir", "cnx"},
          "p": {"drop"}}
_KERNELS = {"ir": (3, 5, 7), "fir": (3, 5, 7), "cnx": (3, 5, 7), "pw": (1,), "reppw": (1,)}
_MIN_KERNEL = {"rep": 3, "repdw": 3}  # a 1x1 rep block's two branches are one conv: that is reppw
_SE_AT_EXPANDED = ("ir", "fir")  # MobileNetV3 squeezes the expanded width, not the output
MAX_EXPAND = 8
_OPTION = re.compile(r"^(c|s|se|p|e)(\d+)$")
_KERNEL_OPTION = re.compile(r"^k(\d+(?:k\d+)*)$")
_ACT_OPTION = re.compile(r"^n([a-z][a-z0-9]*)$")
_GRAMMAR_HELP = (
    "accepted blocks: conv_k3_c16[_s2][_se4][_r][_nsw], dw_k3_c32[_s2][_se4][_r][_nsw], "
    "sep_k3_c32[_s2][_se4][_r][_nsw], pw_c16[_se4][_r][_nsw], ir_k3_e4_c16[_s2][_se4][_nhs] "
    "(k3/5/7, e1..8), fir_k3_e4_c16[_s2][_se4][_nsw], cnx_k7_e4[_nge] (mixed kernels: cnx_k3k7_e4), "
    "rep_k3_c16[_s2][_nsw], repdw_k3[_s2][_nsw], reppw_c16[_nsw], max, blur, std, drop_p10; "
    f"activations: {', '.join('n' + a for a in ACTIVATIONS)}"
)


@dataclass(frozen=True)
class BlockSpec:
    """One block. ``out`` is 0 for blocks that keep the channel count (pools, dropout, std, cnx, repdw)."""

    kind: str
    out: int = 0
    kernel: int | tuple[int, ...] = 3  # a tuple only for cnx's mixed depthwise kernels
    stride: int = 1
    se: int = 0  # squeeze-excite bottleneck width; 0 = no SE
    drop: int = 0  # dropout probability in percent
    act: str = "re"  # activation of conv blocks, a key of ACTIVATIONS
    expand: int = 0  # expansion ratio e of ir/fir/cnx; 0 for the other kinds
    residual: bool = False  # ``_r``: add the input to the output (conv/dw/sep/pw)

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise SpecError(f"unknown block kind {self.kind!r}; {_GRAMMAR_HELP}")
        self._check_options()
        if self.kind == "drop" and not 0 < self.drop < 100:
            raise SpecError(f"dropout needs 0 < p < 100 (percent), got {self.drop}")
        if self.act not in ACTIVATIONS:
            raise SpecError(f"unknown activation n{self.act}; {_GRAMMAR_HELP}")
        if self.kind in _NEEDS["e"] and not 1 <= self.expand <= MAX_EXPAND:
            raise SpecError(f"block {self.kind!r} needs an expansion ratio e1..e{MAX_EXPAND}, "
                            f"got e{self.expand}; {_GRAMMAR_HELP}")
        if self.stride not in (1, 2):
            raise SpecError(f"stride must be 1 or 2, got s{self.stride}")
        self._check_kernel()
        self._check_se()
        if self.residual and self.stride != 1:
            raise SpecError(f"block {str(self)!r}: residual _r adds the input to the output, which "
                            f"needs equal shapes, but stride {self.stride} shrinks the height and "
                            f"width; drop _s{self.stride} or _r")

    def _set_options(self) -> set[str]:
        """The options this block carries, as its string would print them."""
        values = {"c": self.out, "s": self.stride != 1, "se": self.se, "p": self.drop,
                  "n": self.act != "re", "e": self.expand, "r": self.residual}
        return {key for key, value in values.items() if value}

    def _check_options(self) -> None:
        extra = sorted(self._set_options() - _OPTIONS_BY_KIND[self.kind])
        if extra:
            raise _not_applicable(self.kind, extra[0], f"block {str(self)!r}")
        if self.kind in _NEEDS["c"] and self.out < 1:
            raise SpecError(f"block {self.kind!r} needs an output width c>=1; {_GRAMMAR_HELP}")

    def _check_kernel(self) -> None:
        mixed = isinstance(self.kernel, tuple)
        if mixed and (self.kind != "cnx" or len(self.kernel) < 2):
            raise SpecError(f"mixed kernels k{'k'.join(map(str, self.kernel))} apply only to cnx, "
                            f"two or more of them; {_GRAMMAR_HELP}")
        if mixed and list(self.kernel) != sorted(set(self.kernel)):
            raise SpecError(f"mixed kernels are listed once each, smallest first (cnx_k3k7_e4), "
                            f"got k{'k'.join(map(str, self.kernel))}; {_GRAMMAR_HELP}")
        for k in self.kernels:
            if k < 1 or k % 2 == 0:
                raise SpecError(f"kernel size must be odd and >= 1, got k{k}")
            if k not in _KERNELS.get(self.kind, (k,)) or k < _MIN_KERNEL.get(self.kind, 1):
                accepted = (" or ".join(f"k{a}" for a in _KERNELS[self.kind]) if self.kind in _KERNELS
                            else f"odd k >= {_MIN_KERNEL[self.kind]}")
                raise SpecError(f"block {self.kind!r} takes kernel size {accepted}, got k{k}; "
                                f"{_GRAMMAR_HELP}")

    def _check_se(self) -> None:
        """SE squeezes the block's channels: a bottleneck wider than the block only adds parameters.

        ir/fir squeeze their expanded width, which depends on the input's channels: the phase
        checks that bound as it walks the blocks (`PhaseSpec._check_channels`)."""
        if self.se < 0:
            raise SpecError(f"block {str(self)!r}: squeeze-excite bottleneck must be >= 1, got se{self.se}")
        if self.se and self.kind not in _SE_AT_EXPANDED and not 1 <= self.se <= self.out:
            raise SpecError(f"block {str(self)!r}: squeeze-excite bottleneck se{self.se} must be "
                            f"1..{self.out} (at most the block's width c{self.out})")

    @property
    def kernels(self) -> tuple[int, ...]:
        """The block's kernel sizes: one, or cnx's mixed depthwise kernels."""
        return self.kernel if isinstance(self.kernel, tuple) else (self.kernel,)

    def __str__(self) -> str:
        if self.kind in ("max", "blur", "std"):
            return self.kind
        if self.kind == "drop":
            return f"drop_p{self.drop}"
        parts = [self.kind]
        if "k" in _OPTIONS_BY_KIND[self.kind]:
            parts.append("k" + "k".join(map(str, self.kernels)))
        for key, value in (("e", self.expand), ("c", self.out)):
            if value:
                parts.append(f"{key}{value}")
        if self.stride != 1:
            parts.append(f"s{self.stride}")
        if self.se:
            parts.append(f"se{self.se}")
        if self.residual:
            parts.append("r")
        if self.act != "re":
            parts.append(f"n{self.act}")
        return "_".join(parts)


def _not_applicable(kind: str, key: str, where: str) -> SpecError:
    if key == "c" and kind in ("cnx", "repdw"):
        return SpecError(f"{where}: {kind!r} keeps its input's channels and takes no width c; {_GRAMMAR_HELP}")
    return SpecError(f"option {key!r} does not apply to {kind!r} in {where}; {_GRAMMAR_HELP}")


def _parse_option(opt: str, text: str) -> tuple[str, object]:
    """One ``_``-separated option as (key, value): ``k3`` or ``k3k7``, ``e4``, ``c16``, ``r``, ``nsw``."""
    if opt == "r":
        return "r", True
    if m := _KERNEL_OPTION.match(opt):
        kernels = tuple(int(k) for k in m.group(1).split("k"))
        return "k", kernels[0] if len(kernels) == 1 else kernels
    if m := _ACT_OPTION.match(opt):
        return "n", m.group(1)
    if m := _OPTION.match(opt):
        return m.group(1), int(m.group(2))
    raise SpecError(f"bad option {opt!r} in block {text!r}; {_GRAMMAR_HELP}")


def parse_block(text: str) -> BlockSpec:
    """Decode one block string such as ``dw_k3_c12_se2`` or ``ir_k5_e4_c16_s2_se4_nhs``."""
    kind, *options = text.strip().split("_")
    if kind not in BLOCK_KINDS:
        raise SpecError(f"unknown block {text!r}; {_GRAMMAR_HELP}")
    values: dict[str, object] = {}
    for opt in options:
        key, value = _parse_option(opt, text)
        if key in values:
            raise SpecError(f"bad option {opt!r} in block {text!r} (option {key!r} given twice); "
                            f"{_GRAMMAR_HELP}")
        values[key] = value
    for key in values:
        if key not in _OPTIONS_BY_KIND[kind]:
            raise _not_applicable(kind, key, repr(text))
    return BlockSpec(
        kind=kind,
        out=values.get("c", 0),
        kernel=values.get("k", 1 if kind in ("pw", "reppw") else 3),
        stride=values.get("s", 1),
        se=values.get("se", 0),
        drop=values.get("p", 0),
        act=values.get("n", "re"),
        expand=values.get("e", 0),
        residual=values.get("r", False),
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
    if block.kind in _CONV_KINDS:  # 1x1 convs, the SE gate and every branch of a block keep the size
        k = max(block.kernels)
        return (h + 2 * (k // 2) - k) // block.stride + 1
    return h  # dropout, std


def output_channels(block: BlockSpec, cin: int) -> int:
    """Channels out of ``block`` given ``cin`` in: its width, or ``cin`` for blocks that keep them."""
    return block.out or cin


def has_skip(block: BlockSpec, cin: int) -> bool:
    """Whether the block adds its input to its output: ``_r``, always for cnx, and for ir/fir
    whenever the shapes match (stride 1, c = input channels), as in MobileNetV2."""
    if block.kind in ("ir", "fir"):
        return block.stride == 1 and block.out == cin
    return block.residual or block.kind == "cnx"


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
        self._check_layout()

    def _check_layout(self) -> None:
        """Walk the blocks with the shape each receives (the dataset's channels and size for the
        first), refusing a layout that downsamples its images away or a residual whose shapes
        cannot match: caught here, either would otherwise crash only at the first training step."""
        info = dataset_info(self.dataset)
        c, sizes = info.channels, [info.size]
        for i, block in enumerate(self.blocks, 1):
            self._check_spatial(i, block, sizes)
            h_out = output_size(block, sizes[-1])
            self._check_channels(i, block, (c, sizes[-1]), (output_channels(block, c), h_out))
            sizes.append(h_out)
            c = output_channels(block, c)

    def _check_spatial(self, i: int, block: BlockSpec, sizes: list[int]) -> None:
        info = dataset_info(self.dataset)
        h, need = sizes[-1], min_input_size(block)
        if h < need:
            raise SpecError(
                f"phase {self.name!r} downsamples {info.size}x{info.size} {info.name} images too far: "
                f"block {i} of {len(self.blocks)} ('{block}') receives {h}x{h} pixels "
                f"(sizes {' -> '.join(map(str, sizes))}) but needs at least {need}x{need}; "
                f"accepted inputs: max >= 2x2, blur >= 3x3, conv blocks >= 1x1; "
                f"remove a max/blur or stride-2 block")

    def _check_channels(self, i: int, block: BlockSpec, shape_in: tuple[int, int],
                        shape_out: tuple[int, int]) -> None:
        """The checks that need the channels a block receives, which only the phase knows."""
        (c, h), (cout, h_out) = shape_in, shape_out
        where = f"phase {self.name!r}: block {i} of {len(self.blocks)} ('{block}')"
        if block.residual and (c, h) != (cout, h_out):
            raise SpecError(
                f"{where} adds its input to its output (_r), but receives {c}x{h}x{h} and returns "
                f"{cout}x{h_out}x{h_out} (channels x height x width); _r needs stride 1 and "
                f"c{c}, the channels it receives: use c{c} or drop _r")
        if block.kind in _SE_AT_EXPANDED and block.se > block.expand * c:
            raise SpecError(
                f"{where}: squeeze-excite bottleneck se{block.se} must be 1..{block.expand * c} "
                f"(at most the expanded width, e{block.expand} x {c} input channels)")
        if len(block.kernels) > c:
            raise SpecError(f"{where} splits {c} channels among {len(block.kernels)} kernels; "
                            f"each kernel needs at least one channel")

    @classmethod
    def from_arch(cls, name: str, dataset: str, arch: str, change: str = "") -> "PhaseSpec":
        blocks, head = parse_arch(arch)
        return cls(name=name, dataset=dataset, blocks=blocks, change=change, head=head)

    @property
    def arch(self) -> str:
        return format_arch(self.blocks, self.head)

    @property
    def out_channels(self) -> int:
        c = dataset_info(self.dataset).channels
        for block in self.blocks:
            c = output_channels(block, c)
        return c

    def scaled(self, width: float, multiple: int = 1) -> "PhaseSpec":
        """The same phase with every width (and SE bottleneck) multiplied by ``width``.

        ``multiple`` rounds each block's width to the nearest multiple of it (at least one
        multiple): CPU kernels in channels_last vectorise over channels, and on this
        project's AVX-512 CPU widths in multiples of 8 trained 1.3-1.4x faster than
        10-14 (README, Training speed). Not timm's make_divisible, whose "never below 90%"
        bump would push nearly every width of a tiny net from 8-15 up to 16.
        SE bottlenecks are left unrounded (they are 1x1 convs on a 1x1 map), capped at the
        width they squeeze (the block's, or for ir/fir the expanded one). Blocks that keep
        their input's channels (cnx, repdw) follow the block before them.
        """
        if width <= 0:
            raise SpecError(f"width multiplier must be > 0, got {width}")
        if multiple < 1:
            raise SpecError(f"width multiple must be >= 1, got {multiple}")
        blocks, cin = [], dataset_info(self.dataset).channels
        for block in self.blocks:
            blocks.append(_scale_block(block, width, multiple, cin))
            cin = output_channels(blocks[-1], cin)
        return replace(self, blocks=tuple(blocks))

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


def _scale_block(b: BlockSpec, width: float, multiple: int, cin: int) -> BlockSpec:
    """One block of `PhaseSpec.scaled`, given the (already scaled) channels it receives."""
    if not b.out:
        return b  # pools, dropout and the blocks that keep their input's channels
    out = max(multiple, round(b.out * width / multiple) * multiple)
    cap = b.expand * cin if b.kind in _SE_AT_EXPANDED else out  # rounding out may undercut se
    se = min(cap, max(1, round(b.se * width))) if b.se else 0
    return replace(b, out=out, se=se)
