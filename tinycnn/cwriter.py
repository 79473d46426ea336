"""model.c from an int8 QOperator graph, written by tinycnn itself (issue 22, items 1-2).

Input: the ModelProto `cgen.c_graph` makes of model.int8.onnx (uint8 ``pixels`` [1, C, H, W] in,
int8 ``logits`` [1, classes] out, every tensor's shape in ``value_info``). Output: the text of
model.c, one ``void model(const uint8_t pixels[..], int8_t logits[..])`` whose intermediates
all live at planned offsets of one ``static int8_t arena[N]`` (`arena.plan`: tensor lifetimes
of this graph, greedy by size, in place where the op allows), weights as ``static const``
arrays, small static kernels called with pointers into the arena: no heap, no recursion, no
libm (the object's only undefined symbols are memcpy at most), clean under ``-std=c99 -Wall
-Wextra -Werror -pedantic``.

Why write it ourselves rather than transform emx-onnx-cgen's output: emx declares every
tensor as a local array of ``model()`` (its stack is the sum of all of them) or mallocs them,
and its requantisation and sigmoid call libm (``nearbyintf``, ``fminf``, ``expf``). Moving its
buffers into an arena means rewriting every kernel call it emits, and its rounding would still
need libm: that is rewriting the generator anyway. Our graphs use a dozen ops, each a few lines
of C whose arithmetic we can match to onnxruntime's line by line.

Exactness with onnxruntime (tests/test_cwriter.py checks each op on random inputs):

* the float front (Cast, Div by 255, Sub mean, Div std, QuantizeLinear) maps one uint8 pixel of
  one channel to one int8 value: a [C][256] table, computed by onnxruntime running that prefix
  on all 256 values per channel, so exact by construction;
* QLinearSigmoid / QLinearLeakyRelu: onnxruntime itself builds a 256-entry table
  (qlinear_lookup_table.cc); ours is computed by onnxruntime running the op on all 256 inputs;
* QLinearConv: int32 sum of (x - x_zp) * w (symmetric int8 weights) + int32 bias, then
  ``v = (float)acc * m[c]`` with ``m = x_scale * w_scale[c] / y_scale`` in float32, in that order
  (qlinearconv.cc's output_scales), clamped to [-128 - y_zp, 127 - y_zp], rounded half to even,
  + y_zp (MLAS's MlasRequantizeOutput: cvtps2dq after min/max);
* QLinearGlobalAveragePool: ``acc = sum(x) - x_zp * N``, ``v = (float)acc * s`` with
  ``s = x_scale / (y_scale * (float)N)`` (MLAS qlgavgpool.cpp), then the same requantisation;
* QLinearMul: ``v = (float)((a - a_zp) * (b - b_zp)) * r + (float)c_zp``, each operation rounded
  to float32 (no fused multiply-add), ``r = a_scale * b_scale / c_scale`` (MLAS qlmul.cpp), rounded
  half to even, saturated (adding c_zp after rounding, as an older SSE2 kernel did, is 1 LSB off
  at ties: the test builds such ties);
* QLinearAdd: MLAS's AVX2 kernel (qladd_avx2.cpp) computes ``fma(a, rA, fma(b, rB, k))`` in
  float32 with ``rA = a_scale / c_scale``, ``rB = b_scale / c_scale``, ``k = (float)c_zp - (rA *
  a_zp + rB * b_zp)``; the C does each fused multiply-add exactly in 64-bit integers (no libm
  fmaf);
* MaxPool, Pad (constant, reflect, edge) and Reshape move int8 values: exact.

Rounding half to even without libm: after the clamp |v| < 2^22, where ``(v + 0x1.8p23f) -
0x1.8p23f`` is the IEEE round-to-nearest-even of v (no -ffast-math, and no FMA contraction:
``-std=c99`` turns GCC's off). Float constants are written as C99 hex-float literals, exact.

Conv, pool and pad kernels take the absolute output row range ``[row0, row1)``. By default
``model()`` calls each once for all rows. With ``patch`` (``tinycnn export --format c --patch``
or ``--patch-rows N``, issue 22 item 4) the first stage, the front up to its first op with a row
stride above 1, runs band by band as MCUNetV2's patch-based inference: for each band of the
stage's output rows, each op computes only the rows the next one reads (`Rows.needs`: kernel,
stride, padding, mirrored rows of a reflect pad), into a band buffer of its own in the arena,
and the last writes its rows into its full-size output. The halo rows are recomputed by the
neighbouring bands (the extra MACs the record reports), never stored; the arena no longer holds
any full-resolution intermediate. BAND_KERNELS are those kernels with the rows their input and
output buffers hold as arguments; they take KERNELS' place only in a tiled model.c, so the
default model.c is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import arena
from .errors import ExportError

PIXELS, LOGITS = "pixels", "logits"
MS = "com.microsoft"
FRONT_OPS = ("Cast", "Div", "Sub", "Mul", "Add", "QuantizeLinear")
LOOKUP_OPS = ("QLinearSigmoid", "QLinearLeakyRelu")
SUPPORTED = ("Cast/Div/Sub/Mul/Add -> QuantizeLinear on the pixels (the float front)", "QLinearConv", "MaxPool",
             "Pad", "Reshape", f"{MS}.QLinearGlobalAveragePool", f"{MS}.QLinearSigmoid", f"{MS}.QLinearLeakyRelu",
             f"{MS}.QLinearMul", f"{MS}.QLinearAdd")
IN_PLACE = ("lut", "mul", "add")  # kernels that read element i before they write element i


@dataclass(frozen=True)
class Rows:
    """How a row-wise op's output rows depend on its input rows, for the patch-based stage:
    ``kind`` "same" (elementwise), "window" (conv or pool: kernel ``kh``, stride ``sh``, top
    padding ``pt``) or a Pad mode ("constant", "reflect", "edge": ``pt`` rows added on top)."""

    kind: str
    h: int  # input rows
    oh: int  # output rows
    row_bytes: int  # bytes of one output row, all channels
    kh: int = 1
    sh: int = 1
    pt: int = 0
    macs_per_row: int = 0

    def needs(self, row0: int, row1: int) -> tuple[int, int]:
        """The input rows [lo, hi) that output rows [row0, row1) read, halo and mirrored rows included."""
        if self.kind == "same":
            return row0, row1
        if self.kind == "window":
            lo, hi = max(0, row0 * self.sh - self.pt), min(self.h, (row1 - 1) * self.sh - self.pt + self.kh)
        else:
            rows = [self.source(r - self.pt) for r in range(row0, row1)]
            rows = [r for r in rows if r is not None]
            lo, hi = (min(rows), max(rows) + 1) if rows else (0, 0)
        return lo, max(lo, hi)

    def source(self, i: int) -> int | None:
        """The input row a padded row ``i`` copies (the C kernel's pad_index), None for a constant."""
        if 0 <= i < self.h:
            return i
        if self.kind == "constant":
            return None
        if self.kind == "reflect":
            return -i if i < 0 else 2 * (self.h - 1) - i
        return 0 if i < 0 else self.h - 1


@dataclass
class Step:
    """One call in model(): a kernel, its tensors, its constants (C text) and call template."""

    op: str
    inputs: list  # tensor names in the arena (or PIXELS)
    output: str
    constants: str  # static const definitions
    call: str  # with {in0}, {in1}, {out} for the pointers
    in_place: bool = False  # may write over inputs[0] if it dies here
    macs: int = 0
    extra: dict = field(default_factory=dict)


# --- the graph ---------------------------------------------------------------------------------

class Graph:
    """Constants, shapes and attributes of the ModelProto, looked up by name."""

    def __init__(self, proto) -> None:
        from onnx import helper, numpy_helper

        g = proto.graph
        self.proto, self.nodes = proto, list(g.node)
        self.const = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.shape = {}
        for v in [*g.input, *g.value_info, *g.output]:
            self.shape[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
        self.attrs = lambda node: {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def scalar(self, name: str, node) -> float | int:
        value = self.const.get(name)
        if value is None or value.size != 1:
            raise ExportError(f"{node.op_type} {node.name!r}: {name!r} must be a constant scalar for the C export")
        return value.reshape(()).item()

    def size(self, name: str) -> int:
        return int(np.prod(self.shape[name]))


def _f32(x) -> np.float32:
    return np.float32(x)


def c_float(x) -> str:
    """An exact C99 hex-float literal of a float32 value."""
    v = float(np.float32(x))
    if v == 0:
        return "0.0f"
    return f"{v.hex()}f"


def c_array(ctype: str, name: str, values, per_line: int = 16) -> str:
    flat = np.asarray(values).reshape(-1)
    if ctype == "float":
        items = [c_float(v) for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)] or ["0"]
    return f"static const {ctype} {name}[{max(len(items), 1)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


# --- the float front: a [C][256] table ----------------------------------------------------------

def _front_nodes(g: Graph) -> list:
    front = []
    for node in g.nodes:
        if node.op_type not in FRONT_OPS or node.domain not in ("", "ai.onnx"):
            break
        front.append(node)
        if node.op_type == "QuantizeLinear":
            return front
    raise ExportError("the C export needs the graph to start with elementwise float ops on the pixels "
                      "(Cast, Div, Sub, Mul, Add) ending in one QuantizeLinear; found "
                      f"{', '.join(n.op_type for n in g.nodes[:len(front) + 1])}")


def _front_step(g: Graph) -> tuple[Step, int]:
    import onnx
    from onnx import helper

    nodes = _front_nodes(g)
    channels = g.shape[PIXELS][1]
    for node in nodes:
        for name in node.input[1:]:
            value = g.const.get(name)
            if name and (value is None or value.size not in (1, channels)
                         or (value.size > 1 and value.reshape(-1).size != value.shape[-3])):
                raise ExportError(f"the float front's {node.op_type} reads {name!r}, which is not a per-channel "
                                  f"constant: the front is not a per-pixel table")
    out = nodes[-1].output[0]
    names = {n for node in nodes for n in node.input}
    graph = helper.make_graph(nodes, "front", [helper.make_tensor_value_info(PIXELS, onnx.TensorProto.UINT8,
                                                                             [1, channels, 1, 256])],
                              [helper.make_tensor_value_info(out, onnx.TensorProto.INT8, None)],
                              [t for t in g.proto.graph.initializer if t.name in names])
    model = helper.make_model(graph, opset_imports=list(g.proto.opset_import))
    values = np.broadcast_to(np.arange(256, dtype=np.uint8), (1, channels, 1, 256)).copy()
    table = run_onnx(model, {PIXELS: values})[0].reshape(channels, 256)
    _, _, h, w = g.shape[PIXELS]
    step = Step("front", [PIXELS], out, c_array("int8_t", "front_table", table),
                f"front(front_table, {channels}, {{n}}, px, {{out}}{{view}});",
                extra={"rows": Rows("same", h, h, channels * w), "whole_n": g.size(PIXELS) // channels, "band_n": w})
    return step, len(nodes)


def run_onnx(model, feeds: dict) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)
    except Exception as e:  # onnxruntime's own error types
        raise ExportError(f"onnxruntime could not run a part of the int8 graph for C: "
                          f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}") from e


# --- int8 ops ---------------------------------------------------------------------------------

def _conv_step(g: Graph, node, i: int) -> Step:
    x, xs, xzp, w, ws, wzp, ys, yzp, *rest = list(node.input) + [""]
    a = g.attrs(node)
    weights, bias = g.const.get(w), g.const.get(rest[0]) if rest and rest[0] else None
    wz = g.const.get(wzp)
    if weights is None or weights.dtype != np.int8 or wz is None or np.any(wz != 0):
        raise ExportError(f"QLinearConv {node.name!r}: the C export needs constant int8 weights with zero points 0 "
                          f"(symmetric per-channel quantisation)")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise ExportError(f"QLinearConv {node.name!r}: auto_pad and dilation are not supported by the C export")
    cout, cin_g, kh, kw = weights.shape
    _, cin, h, wd = g.shape[x]
    _, _, oh, ow = g.shape[node.output[0]]
    scales = np.broadcast_to(g.const[ws].astype(np.float32).reshape(-1), (cout,))
    m = np.array([_f32(_f32(g.scalar(xs, node)) * s) / _f32(g.scalar(ys, node)) for s in scales], np.float32)
    b = np.zeros(cout, np.int32) if bias is None else bias.astype(np.int32)
    sh, sw = a.get("strides", [1, 1])
    pt, pl = a.get("pads", [0, 0, 0, 0])[:2]
    groups = a.get("group", 1)
    consts = (c_array("int8_t", f"w{i}", weights) + c_array("int32_t", f"b{i}", b) + c_array("float", f"m{i}", m)
              + f"static const conv_t conv{i} = {{{cin}, {h}, {wd}, {cout}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, "
                f"{pt}, {pl}, {groups}, {int(g.scalar(xzp, node))}, {int(g.scalar(yzp, node))}, w{i}, b{i}, m{i}}};\n")
    kernel = "dwconv" if groups == cin == cout else "conv"
    return Step(kernel, [x], node.output[0], consts, f"{kernel}(&conv{i}, {{in0}}, {{out}}, {{view}});",
                macs=cout * oh * ow * cin_g * kh * kw,
                extra={"rows": Rows("window", h, oh, cout * ow, kh, sh, pt, macs_per_row=cout * ow * cin_g * kh * kw)})


def _pool_step(g: Graph, node, i: int) -> Step:
    a = g.attrs(node)
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) \
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(node.output) > 1:
        raise ExportError(f"MaxPool {node.name!r}: ceil_mode, dilation, auto_pad and indices are not supported")
    x, y = node.input[0], node.output[0]
    _, c, h, w = g.shape[x]
    _, _, oh, ow = g.shape[y]
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    pt, pl = a.get("pads", [0, 0, 0, 0])[:2]
    consts = f"static const pool_t pool{i} = {{{c}, {h}, {w}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}}};\n"
    return Step("maxpool", [x], y, consts, f"maxpool(&pool{i}, {{in0}}, {{out}}, {{view}});",
                extra={"rows": Rows("window", h, oh, c * ow, kh, sh, pt)})


PAD_MODES = {"constant": 0, "reflect": 1, "edge": 2}


def _pad_step(g: Graph, node, i: int) -> Step:
    mode = g.attrs(node).get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = g.const.get(node.input[1])
    value = int(g.scalar(node.input[2], node)) if len(node.input) > 2 and node.input[2] else 0
    if mode not in PAD_MODES or pads is None or len(node.input) > 3 or pads.size != 8 \
            or np.any(pads[[0, 1, 4, 5]] != 0) or np.any(pads < 0):
        raise ExportError(f"Pad {node.name!r}: the C export pads H and W of an NCHW tensor by constant amounts "
                          f"(modes {', '.join(PAD_MODES)}); got mode {mode!r}, pads {pads}")
    x, y = node.input[0], node.output[0]
    _, c, h, w = g.shape[x]
    _, _, oh, ow = g.shape[y]
    if mode == "reflect" and (max(pads[2], pads[6]) >= h or max(pads[3], pads[7]) >= w):
        raise ExportError(f"Pad {node.name!r}: a reflect pad must be smaller than the image")
    consts = (f"static const pad_t pad{i} = {{{c}, {h}, {w}, {oh}, {ow}, {int(pads[2])}, {int(pads[3])}, "
              f"{PAD_MODES[mode]}, {value}}};\n")
    return Step("pad", [x], y, consts, f"pad(&pad{i}, {{in0}}, {{out}}, {{view}});",
                extra={"rows": Rows(mode, h, oh, c * ow, pt=int(pads[2]))})


def _gap_step(g: Graph, node, i: int) -> Step:
    x, xs, xzp, ys, yzp = node.input
    if g.attrs(node).get("channels_last", 0):
        raise ExportError(f"QLinearGlobalAveragePool {node.name!r}: channels_last is not supported")
    _, c, h, w = g.shape[x]
    n = h * w
    scale = _f32(g.scalar(xs, node)) / (_f32(g.scalar(ys, node)) * _f32(n))
    consts = f"static const float gap{i}_scale = {c_float(scale)};\n"
    return Step("gap", [x], node.output[0], consts,
                f"gap({{in0}}, {{out}}, {c}, {n}, {int(g.scalar(xzp, node))}, gap{i}_scale, "
                f"{int(g.scalar(yzp, node))});")


def _lookup_step(g: Graph, node, i: int) -> Step:
    """The op's own 256-entry table, from onnxruntime running it on every int8 input."""
    import onnx
    from onnx import helper

    x, y = node.input[0], node.output[0]
    names = set(node.input[1:])
    graph = helper.make_graph([node], "lut", [helper.make_tensor_value_info(x, onnx.TensorProto.INT8, [256])],
                              [helper.make_tensor_value_info(y, onnx.TensorProto.INT8, None)],
                              [t for t in g.proto.graph.initializer if t.name in names])
    model = helper.make_model(graph, opset_imports=list(g.proto.opset_import))
    table = run_onnx(model, {x: np.arange(-128, 128, dtype=np.int8)})[0]
    return Step("lut", [x], y, c_array("int8_t", f"lut{i}", table), f"lut(lut{i}, {{in0}}, {{out}}, {g.size(x)});",
                in_place=True)


def _broadcast(g: Graph, node, a: str, b: str) -> tuple[int, int, int]:
    """(channels, elements per channel of the output, of the broadcast input): equal shapes, or
    [1, C, H, W] with [1, C, 1, 1] (squeeze-excitation's gate)."""
    sa, sb, sy = g.shape[a], g.shape[b], g.shape[node.output[0]]
    if sa != sy:
        raise ExportError(f"{node.op_type} {node.name!r}: the C export needs the first input to have the output's "
                          f"shape ({sa} vs {sy})")
    c = sy[1] if len(sy) == 4 else 1
    if sb == sy:
        return c, g.size(a) // c, g.size(a) // c
    if len(sb) == 4 and sb[:2] == sy[:2] and sb[2:] == [1, 1]:
        return c, g.size(a) // c, 1
    raise ExportError(f"{node.op_type} {node.name!r}: broadcast of {sb} to {sy} is not supported by the C export")


def _mul_step(g: Graph, node, i: int) -> Step:
    a, sa, za, b, sb, zb, sc, zc = node.input
    if g.shape[a] != g.shape[node.output[0]]:
        a, sa, za, b, sb, zb = b, sb, zb, a, sa, za  # the product is symmetric: the full-size input first
    c, n, nb = _broadcast(g, node, a, b)
    ratio = _f32(_f32(g.scalar(sa, node)) * _f32(g.scalar(sb, node))) / _f32(g.scalar(sc, node))
    consts = f"static const float mul{i}_ratio = {c_float(ratio)};\n"
    return Step("mul", [a, b], node.output[0], consts,
                f"mul({{in0}}, {{in1}}, {{out}}, {c}, {n}, {nb}, {int(g.scalar(za, node))}, "
                f"{int(g.scalar(zb, node))}, mul{i}_ratio, {int(g.scalar(zc, node))});", in_place=True)


def mantissa_exponent(x) -> tuple[int, int]:
    """A float32 as (m, e) with x == m * 2^e and |m| < 2^24 (normalised for normal numbers)."""
    bits = int(np.array(x, np.float32).view(np.uint32))
    exp, mant = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if exp == 0xFF:
        raise ExportError(f"a QLinearAdd constant is not finite ({x})")
    m, e = (mant, -149) if exp == 0 else (mant | 0x800000, exp - 150)
    return (-m if bits >> 31 else m), e


def exact_fma(x: float, y: float, z: float) -> np.float32:
    """float32(x * y + z) rounded once (what an FMA unit computes), from exact rationals."""
    from fractions import Fraction

    exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
    near = np.float32(float(exact))
    candidates = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(np.array(c).view(np.uint32)) & 1))


def _add_step(g: Graph, node, i: int) -> Step:
    """QLinearAdd of equal shapes (a residual), as MLAS's AVX2 kernel (qladd_avx2.cpp): its
    constant ``k = (float)c_zp - (rA * a_zp + rB * b_zp)`` compiled with the multiply-add fused."""
    a, sa, za, b, sb, zb, sc, zc = node.input
    if g.shape[a] != g.shape[b] or g.shape[a] != g.shape[node.output[0]]:
        raise ExportError(f"QLinearAdd {node.name!r}: the C export adds tensors of equal shapes only "
                          f"({g.shape[a]} + {g.shape[b]})")
    ra = _f32(g.scalar(sa, node)) / _f32(g.scalar(sc, node))
    rb = _f32(g.scalar(sb, node)) / _f32(g.scalar(sc, node))
    k = _f32(_f32(g.scalar(zc, node)) - exact_fma(ra, _f32(g.scalar(za, node)), rb * _f32(g.scalar(zb, node))))
    r = [v for x in (ra, rb, k) for v in mantissa_exponent(x)]
    return Step("add", [a, b], node.output[0], c_array("int32_t", f"add{i}", r),
                f"add({{in0}}, {{in1}}, {{out}}, {g.size(a)}, add{i});", in_place=True)


def _reshape_step(g: Graph, node, i: int) -> Step:
    return Step("reshape", [node.input[0]], node.output[0], "",
                f"memcpy({{out}}, {{in0}}, {g.size(node.output[0])});", in_place=True)


OPS = {("", "QLinearConv"): _conv_step, ("", "MaxPool"): _pool_step, ("", "Pad"): _pad_step,
       ("", "Reshape"): _reshape_step, (MS, "QLinearGlobalAveragePool"): _gap_step,
       (MS, "QLinearSigmoid"): _lookup_step, (MS, "QLinearLeakyRelu"): _lookup_step, (MS, "QLinearMul"): _mul_step,
       (MS, "QLinearAdd"): _add_step}


def steps(g: Graph) -> list[Step]:
    """The calls of model(), in graph order; an ExportError for any op outside `SUPPORTED`."""
    check_ops(g)
    front, used = _front_step(g)
    out = [front]
    for i, node in enumerate(g.nodes[used:], 1):
        out.append(OPS[(node.domain if node.domain != "ai.onnx" else "", node.op_type)](g, node, i))
    return out


# --- the C text -------------------------------------------------------------------------------

KERNELS = r"""typedef struct {
    int cin, h, w, cout, oh, ow, kh, kw, sh, sw, pt, pl, groups, xzp, yzp;
    const int8_t *wt;
    const int32_t *bias;
    const float *m;
} conv_t;

typedef struct { int c, h, w, oh, ow, kh, kw, sh, sw, pt, pl; } pool_t;

typedef struct { int c, h, w, oh, ow, pt, pl, mode, value; } pad_t;

/* (float)acc * m clamped to the int8 range around zp, rounded half to even, + zp: MLAS's
 * requantisation. Below 2^22, adding and subtracting 1.5 * 2^23 rounds to the nearest even. */
static int8_t requant(int32_t acc, float m, int zp) {
    const float lo = (float)(-128 - zp), hi = (float)(127 - zp);
    float v = (float)acc * m;
    v = v < lo ? lo : (v > hi ? hi : v);
    v = (v + 0x1.8p23f) - 0x1.8p23f;
    return (int8_t)((int)v + zp);
}

/* The float front as a table: one int8 value per channel and pixel value. */
static void front(const int8_t *table, int c, int hw, const uint8_t *x, int8_t *y) {
    int i, j;
    for (i = 0; i < c; ++i) {
        for (j = 0; j < hw; ++j) {
            y[(long)i * hw + j] = table[i * 256 + x[(long)i * hw + j]];
        }
    }
}

/* Output rows [row0, row1) of a grouped convolution; x is the whole input tensor. */
static void conv(const conv_t *p, const int8_t *x, int8_t *y, int row0, int row1) {
    const int cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, k = p->kh * p->kw;
    int oc, oy, ox, ic, ky, kx;
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *wk = p->wt + (long)oc * cin_g * k;
        const int8_t *xg = x + (long)(oc / cout_g) * cin_g * p->h * p->w;
        for (oy = row0; oy < row1; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int32_t acc = p->bias[oc];
                for (ic = 0; ic < cin_g; ++ic) {
                    const int8_t *xc = xg + (long)ic * p->h * p->w;
                    for (ky = 0; ky < p->kh; ++ky) {
                        const int iy = oy * p->sh - p->pt + ky;
                        if (iy < 0 || iy >= p->h) {
                            continue;
                        }
                        for (kx = 0; kx < p->kw; ++kx) {
                            const int ix = ox * p->sw - p->pl + kx;
                            if (ix >= 0 && ix < p->w) {
                                acc += (int32_t)(xc[iy * p->w + ix] - p->xzp) * wk[ic * k + ky * p->kw + kx];
                            }
                        }
                    }
                }
                y[((long)oc * p->oh + oy) * p->ow + ox] = requant(acc, p->m[oc], p->yzp);
            }
        }
    }
}

/* Depthwise (groups = channels): one input channel per output channel, rows [row0, row1). */
static void dwconv(const conv_t *p, const int8_t *x, int8_t *y, int row0, int row1) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < p->cout; ++c) {
        const int8_t *xc = x + (long)c * p->h * p->w, *wk = p->wt + c * p->kh * p->kw;
        for (oy = row0; oy < row1; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int32_t acc = p->bias[c];
                for (ky = 0; ky < p->kh; ++ky) {
                    const int iy = oy * p->sh - p->pt + ky;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int ix = ox * p->sw - p->pl + kx;
                        if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) {
                            acc += (int32_t)(xc[iy * p->w + ix] - p->xzp) * wk[ky * p->kw + kx];
                        }
                    }
                }
                y[((long)c * p->oh + oy) * p->ow + ox] = requant(acc, p->m[c], p->yzp);
            }
        }
    }
}

/* Max-pool output rows [row0, row1); padding never wins. */
static void maxpool(const pool_t *p, const int8_t *x, int8_t *y, int row0, int row1) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < p->c; ++c) {
        const int8_t *xc = x + (long)c * p->h * p->w;
        for (oy = row0; oy < row1; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int best = -128;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int iy = oy * p->sh - p->pt + ky;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int ix = ox * p->sw - p->pl + kx;
                        if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w && xc[iy * p->w + ix] > best) {
                            best = xc[iy * p->w + ix];
                        }
                    }
                }
                y[((long)c * p->oh + oy) * p->ow + ox] = (int8_t)best;
            }
        }
    }
}

static int pad_index(int i, int n, int mode) {
    if (mode == 1) {
        return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
    }
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

/* Pad H and W: mode 0 constant, 1 reflect, 2 edge; output rows [row0, row1). */
static void pad(const pad_t *p, const int8_t *x, int8_t *y, int row0, int row1) {
    int c, oy, ox;
    for (c = 0; c < p->c; ++c) {
        for (oy = row0; oy < row1; ++oy) {
            const int iy = oy - p->pt;
            for (ox = 0; ox < p->ow; ++ox) {
                const int ix = ox - p->pl;
                int8_t v = (int8_t)p->value;
                if (p->mode != 0 || (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w)) {
                    v = x[((long)c * p->h + pad_index(iy, p->h, p->mode)) * p->w + pad_index(ix, p->w, p->mode)];
                }
                y[((long)c * p->oh + oy) * p->ow + ox] = v;
            }
        }
    }
}

/* Global average pool: sum - xzp * n, requantised with scale = x_scale / (y_scale * n). */
static void gap(const int8_t *x, int8_t *y, int c, int n, int xzp, float scale, int yzp) {
    int i, j;
    for (i = 0; i < c; ++i) {
        int32_t acc = -xzp * n;
        for (j = 0; j < n; ++j) {
            acc += x[(long)i * n + j];
        }
        y[i] = requant(acc, scale, yzp);
    }
}

/* y[i] = table[x[i]]: in place allowed. */
static void lut(const int8_t table[256], const int8_t *x, int8_t *y, int n) {
    int i;
    for (i = 0; i < n; ++i) {
        y[i] = table[x[i] + 128];
    }
}

/* a (c channels of n) times b (c channels of nb = n or 1): (float)((a - za) * (b - zb)) * ratio,
 * then + (float)zc in float (two roundings), rounded half to even, saturated. In place over a allowed. */
static void mul(const int8_t *a, const int8_t *b, int8_t *y, int c, int n, int nb, int za, int zb, float ratio,
                int zc) {
    const float z = (float)zc;
    int i, j;
    for (i = 0; i < c; ++i) {
        for (j = 0; j < n; ++j) {
            const long k = (long)i * n + j;
            float v = (float)((a[k] - za) * (b[nb == 1 ? i : k] - zb)) * ratio;
            v = v + z;
            v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
            v = (v + 0x1.8p23f) - 0x1.8p23f;
            y[k] = (int8_t)(int)v;
        }
    }
}

/* v * 2^d for d <= 30; for d < 0 shifted right, the bits shifted out ORed into bit 0 (sticky). */
static int64_t shift_sticky(int64_t v, int d) {
    uint64_t u = (uint64_t)(v < 0 ? -v : v), r;
    if (d >= 0) {
        return v * ((int64_t)1 << d);
    }
    r = d <= -63 ? (u != 0) : ((u >> -d) | ((u & (((uint64_t)1 << -d) - 1)) != 0));
    return v < 0 ? -(int64_t)r : (int64_t)r;
}

/* x * (rm * 2^re) + km * 2^ke rounded once to float32, half to even (a fused multiply-add) for
 * |x| < 2^8 and normalised 24-bit mantissas: the result as *om * 2^*oe, in 64-bit integers. */
static void fma_exact(int32_t x, int32_t rm, int re, int32_t km, int ke, int32_t *om, int *oe) {
    const int64_t p = (int64_t)x * rm;
    const int top = re > ke ? re : ke;
    int64_t s = p == 0 ? km : (km == 0 ? p : shift_sticky(p, re - top + 30) + shift_sticky(km, ke - top + 30));
    int e = p == 0 ? ke : (km == 0 ? re : top - 30), n = 0;
    uint64_t u = (uint64_t)(s < 0 ? -s : s);
    while (n < 64 && (u >> n) != 0) {
        ++n;
    }
    if (n > 24) {
        const int sh = n - 24;
        const uint64_t rem = u & (((uint64_t)1 << sh) - 1), half = (uint64_t)1 << (sh - 1);
        u >>= sh;
        e += sh;
        if (rem > half || (rem == half && (u & 1))) {
            ++u;
        }
    } else if (n > 0) {
        u <<= 24 - n;
        e -= 24 - n;
    }
    *om = s < 0 ? -(int32_t)u : (int32_t)u;
    *oe = e;
}

/* m * 2^e converted like cvtps2dq (half to even; INT32_MIN when out of range), saturated to int8. */
static int8_t to_int8(int32_t m, int e) {
    uint32_t u = (uint32_t)(m < 0 ? -m : m), q;
    int32_t v;
    if (e >= 0) {
        if (m != 0 && (e >= 8 || ((uint64_t)u << e) >= ((uint64_t)1 << 31))) {
            return -128;
        }
        q = u << e;
    } else if (e < -31) {
        q = 0;
    } else {
        const uint32_t rem = u & ((1u << -e) - 1), half = 1u << (-e - 1);
        q = u >> -e;
        if (rem > half || (rem == half && (q & 1))) {
            ++q;
        }
    }
    v = m < 0 ? -(int32_t)q : (int32_t)q;
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

/* a + b of equal shapes as MLAS's AVX2 QLinearAdd: fma(a, rA, fma(b, rB, k)) in float32, each
 * fused multiply-add rounded once, then converted half to even and saturated. r = {rAm, rAe, rBm,
 * rBe, km, ke}. In place over a allowed. */
static void add(const int8_t *a, const int8_t *b, int8_t *y, long n, const int32_t r[6]) {
    long i;
    for (i = 0; i < n; ++i) {
        int32_t m;
        int e;
        fma_exact(b[i], r[2], (int)r[3], r[4], (int)r[5], &m, &e);
        fma_exact(a[i], r[0], (int)r[1], m, e, &m, &e);
        y[i] = to_int8(m, e);
    }
}
"""

# The row-wise kernels as the patch-based first stage calls them (they replace KERNELS' ones of
# the same name in a tiled model.c): the input holds rows [x0, x0 + xh) of each channel, the
# output rows [y0, y0 + yh), so a band buffer holds only the rows its band needs.
BAND_KERNELS = r"""/* The float front as a table, rows [row0, row1); x holds rows [x0, x0 + xh) of each channel, y
 * rows [y0, y0 + yh): here and below, the whole tensors (x0 = y0 = 0) or a band's rows. */
static void front(const int8_t *table, int c, int w, const uint8_t *x, int8_t *y, int x0, int xh, int y0, int yh,
                  int row0, int row1) {
    int i, r, j;
    for (i = 0; i < c; ++i) {
        for (r = row0; r < row1; ++r) {
            for (j = 0; j < w; ++j) {
                y[((long)i * yh + r - y0) * w + j] = table[i * 256 + x[((long)i * xh + r - x0) * w + j]];
            }
        }
    }
}

/* A grouped convolution. */
static void conv(const conv_t *p, const int8_t *x, int8_t *y, int x0, int xh, int y0, int yh, int row0, int row1) {
    const int cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, k = p->kh * p->kw;
    int oc, oy, ox, ic, ky, kx;
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *wk = p->wt + (long)oc * cin_g * k;
        const int8_t *xg = x + (long)(oc / cout_g) * cin_g * xh * p->w;
        for (oy = row0; oy < row1; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int32_t acc = p->bias[oc];
                for (ic = 0; ic < cin_g; ++ic) {
                    const int8_t *xc = xg + (long)ic * xh * p->w;
                    for (ky = 0; ky < p->kh; ++ky) {
                        const int iy = oy * p->sh - p->pt + ky;
                        if (iy < 0 || iy >= p->h) {
                            continue;
                        }
                        for (kx = 0; kx < p->kw; ++kx) {
                            const int ix = ox * p->sw - p->pl + kx;
                            if (ix >= 0 && ix < p->w) {
                                acc += (int32_t)(xc[(iy - x0) * p->w + ix] - p->xzp) * wk[ic * k + ky * p->kw + kx];
                            }
                        }
                    }
                }
                y[((long)oc * yh + oy - y0) * p->ow + ox] = requant(acc, p->m[oc], p->yzp);
            }
        }
    }
}

/* Depthwise (groups = channels): one input channel per output channel. */
static void dwconv(const conv_t *p, const int8_t *x, int8_t *y, int x0, int xh, int y0, int yh, int row0, int row1) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < p->cout; ++c) {
        const int8_t *xc = x + (long)c * xh * p->w, *wk = p->wt + c * p->kh * p->kw;
        for (oy = row0; oy < row1; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int32_t acc = p->bias[c];
                for (ky = 0; ky < p->kh; ++ky) {
                    const int iy = oy * p->sh - p->pt + ky;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int ix = ox * p->sw - p->pl + kx;
                        if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) {
                            acc += (int32_t)(xc[(iy - x0) * p->w + ix] - p->xzp) * wk[ky * p->kw + kx];
                        }
                    }
                }
                y[((long)c * yh + oy - y0) * p->ow + ox] = requant(acc, p->m[c], p->yzp);
            }
        }
    }
}

/* Max pool; padding never wins. */
static void maxpool(const pool_t *p, const int8_t *x, int8_t *y, int x0, int xh, int y0, int yh, int row0, int row1) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < p->c; ++c) {
        const int8_t *xc = x + (long)c * xh * p->w;
        for (oy = row0; oy < row1; ++oy) {
            for (ox = 0; ox < p->ow; ++ox) {
                int best = -128;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int iy = oy * p->sh - p->pt + ky;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int ix = ox * p->sw - p->pl + kx;
                        if (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w && xc[(iy - x0) * p->w + ix] > best) {
                            best = xc[(iy - x0) * p->w + ix];
                        }
                    }
                }
                y[((long)c * yh + oy - y0) * p->ow + ox] = (int8_t)best;
            }
        }
    }
}

/* Pad H and W: mode 0 constant, 1 reflect, 2 edge. */
static void pad(const pad_t *p, const int8_t *x, int8_t *y, int x0, int xh, int y0, int yh, int row0, int row1) {
    int c, oy, ox;
    for (c = 0; c < p->c; ++c) {
        for (oy = row0; oy < row1; ++oy) {
            const int iy = oy - p->pt;
            for (ox = 0; ox < p->ow; ++ox) {
                const int ix = ox - p->pl;
                int8_t v = (int8_t)p->value;
                if (p->mode != 0 || (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w)) {
                    v = x[((long)c * xh + pad_index(iy, p->h, p->mode) - x0) * p->w + pad_index(ix, p->w, p->mode)];
                }
                y[((long)c * yh + oy - y0) * p->ow + ox] = v;
            }
        }
    }
}
"""

NEEDS = {"front": ["front"], "conv": ["conv_t", "requant", "conv"], "dwconv": ["conv_t", "requant", "dwconv"],
         "maxpool": ["pool_t", "maxpool"], "pad": ["pad_t", "pad_index", "pad"], "gap": ["requant", "gap"],
         "lut": ["lut"], "mul": ["mul"], "add": ["shift_sticky", "fma_exact", "to_int8", "add"],
         "reshape": []}


def _kernel_blocks(banded: bool = False) -> dict:
    """KERNELS cut into its typedefs and functions, by name; ``banded``: BAND_KERNELS' versions
    of the row-wise ones in their place."""
    import re

    blocks = {}
    for chunk in KERNELS.strip().split("\n\n") + (BAND_KERNELS.strip().split("\n\n") if banded else []):
        if chunk.startswith("typedef"):
            name = re.search(r"(\w+);\s*$", chunk).group(1)
        else:
            name = re.search(r"^static [\w ]+?(\w+)\(", chunk, re.MULTILINE).group(1)
        blocks[name] = chunk
    return blocks


def kernels_for(ops: set, banded: bool = False) -> str:
    """The C kernels the steps call, each once, in KERNELS' order (no unused static function)."""
    wanted = {name for op in ops for name in NEEDS[op]}
    return "\n\n".join(text for name, text in _kernel_blocks(banded).items() if name in wanted) + "\n"


def lifetimes(all_steps: list[Step], sizes: dict) -> list[arena.Tensor]:
    """Arena tensors of the steps: every output but the logits, from the step that writes it to
    the last that reads it; an in-place step's output aliases its first input if it dies there."""
    last = {}
    for t, step in enumerate(all_steps):
        for name in step.inputs:
            last[name] = t
    tensors = []
    for t, step in enumerate(all_steps):
        if step.output == LOGITS:
            continue
        source = step.inputs[0]
        alias = source if (step.in_place and source != PIXELS and last.get(source) == t
                           and sizes[source] == sizes[step.output]) else None
        tensors.append(arena.Tensor(step.output, sizes[step.output], t, last.get(step.output, t), alias))
    return tensors


def _pointer(name: str, offsets: dict) -> str:
    if name == PIXELS:
        return "px"
    return "out" if name == LOGITS else f"arena + {offsets[name]}"


def whole_view(step: Step, banded: bool = False) -> str:
    """The row arguments of a whole-tensor call: KERNELS' ``0, oh`` (the front takes none), or
    BAND_KERNELS' all input rows held, all output rows written."""
    rows = step.extra.get("rows")
    if rows is None:
        return ""
    if not banded:
        return "" if step.op == "front" else f"0, {rows.oh}"
    return f"0, {rows.h}, 0, {rows.oh}, 0, {rows.oh}"


def _call(step: Step, offsets: dict, view: str, banded: bool = False, indent: str = "    ") -> str:
    ptrs = {f"in{k}": _pointer(name, offsets) for k, name in enumerate(step.inputs)}
    ptrs["out"] = _pointer(step.output, offsets)
    if step.op == "reshape" and ptrs["out"] == ptrs["in0"]:
        return f"{indent}/* {step.output}: a reshape of {step.inputs[0]}, same bytes */"
    # KERNELS' front takes the pixels per channel and no rows, BAND_KERNELS' the row width and rows
    n = step.extra.get("band_n" if banded else "whole_n", "")
    if step.op == "front" and banded:
        view = ", " + view
    return f"{indent}{step.call.format(**ptrs, view=view, n=n)} /* {step.output} */"


def _body(all_steps: list[Step], offsets: dict, banded: bool = False) -> str:
    return "\n".join(_call(step, offsets, whole_view(step, banded), banded) for step in all_steps)


def check_ops(g: Graph) -> None:
    """An ExportError naming the first op outside `SUPPORTED`, before any work is done."""
    for node in g.nodes[len(_front_nodes(g)):]:
        if (node.domain if node.domain != "ai.onnx" else "", node.op_type) not in OPS:
            name = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            raise ExportError(f"the C export does not support the op {name} (node {node.name!r}); "
                              f"supported: {', '.join(SUPPORTED)}")


# --- the patch-based first stage (MCUNetV2) ------------------------------------------------------

ROW_KERNELS = ("front", "conv", "dwconv", "maxpool", "pad")


def first_stage(all_steps: list[Step]) -> int:
    """How many steps the first stage has: the front up to and including the first op with a row
    stride above 1 (a later op's input has a quarter of the bytes, so what comes after no longer
    sets the peak). Band by band works only for a chain of row-wise kernels whose intermediates
    nothing outside the stage reads; anything else is an ExportError naming the op."""
    readers = {}
    for t, step in enumerate(all_steps):
        for name in step.inputs:
            readers.setdefault(name, set()).add(t)
    for n, step in enumerate(all_steps):
        rows = step.extra.get("rows")
        if rows is None or step.op not in ROW_KERNELS:
            raise ExportError(f"the patch-based first stage cannot run {step.op} (writing {step.output!r}) band by "
                              f"band; before its first downsampling the stage may hold only {', '.join(ROW_KERNELS)}")
        if n and (step.inputs != [all_steps[n - 1].output] or readers.get(step.inputs[0]) != {n}):
            raise ExportError(f"the patch-based first stage needs a chain of ops: {step.output!r} is not the only "
                              f"reader of {all_steps[n - 1].output!r}'s bands")
        if rows.kind == "window" and rows.sh > 1:
            return n + 1
    raise ExportError("the patch-based first stage needs an op with a row stride above 1 (a downsampling)")


@dataclass(frozen=True)
class Tiling:
    """The stage's bands: for each band, the output rows [row0, row1) of each stage step, and
    the rows each step's band buffer holds (the largest band's, halo included; the last step
    writes into its full-size tensor)."""

    band_rows: int
    bands: tuple  # band -> step -> (row0, row1)
    held: tuple  # step -> rows of its buffer


def tiling(stage: list[Step], band_rows: int) -> Tiling:
    """Bands of ``band_rows`` output rows of the stage's last op, walked back op by op to the
    rows each must compute (so halo rows are recomputed by the neighbouring band, never stored)."""
    oh = stage[-1].extra["rows"].oh
    bands = []
    for row0 in range(0, oh, band_rows):
        ranges = [(row0, min(row0 + band_rows, oh))]
        for step in reversed(stage[1:]):
            ranges.insert(0, step.extra["rows"].needs(*ranges[0]))
        bands.append(tuple(ranges))
    held = [max(band[j][1] - band[j][0] for band in bands) for j in range(len(stage) - 1)] + [oh]
    return Tiling(band_rows, tuple(bands), tuple(held))


def extra_macs(stage: list[Step], t: Tiling) -> int:
    """MACs of the recomputed halo rows: what the bands compute minus the untiled stage's MACs."""
    run = sum(step.extra["rows"].macs_per_row * (band[j][1] - band[j][0])
              for band in t.bands for j, step in enumerate(stage))
    return run - sum(step.macs for step in stage)


def memory_plan(all_steps: list[Step], sizes: dict, n: int = 0, t: Tiling | None = None) -> arena.Plan:
    """The arena plan; with a tiling of the first ``n`` steps their outputs are band buffers and
    the stage's output, written band by band, is live from the stage's first step."""
    sizes = dict(sizes)
    for j, step in enumerate(all_steps[:n - 1] if t else []):
        sizes[step.output] = step.extra["rows"].row_bytes * t.held[j]
    tensors = lifetimes(all_steps, sizes)
    if t:
        tensors = [replace(x, first=0) if x.name == all_steps[n - 1].output else x for x in tensors]
    return arena.plan(tensors)


def _stage_loop(stage: list[Step], t: Tiling, offsets: dict) -> tuple[str, str]:
    """The band table (a constant) and the loop that runs the stage band by band."""
    k = len(stage)
    values = [v for band in t.bands for rows in band for v in rows]
    ctype = "uint8_t" if max(values) < 256 else "int16_t"
    lines = [f"    for (int band = 0; band < {len(t.bands)}; ++band) {{",
             f"        const {ctype} *r = band_rows + band * {2 * k};"]
    for j, step in enumerate(stage):
        rows = step.extra["rows"]
        x0, xh = ("0", rows.h) if j == 0 else (f"r[{2 * j - 2}]", t.held[j - 1])
        y0, yh = ("0", rows.oh) if j == k - 1 else (f"r[{2 * j}]", t.held[j])
        lines.append(_call(step, offsets, f"{x0}, {xh}, {y0}, {yh}, r[{2 * j}], r[{2 * j + 1}]", True, "        "))
    lines.append("    }")
    return c_array(ctype, "band_rows", values), "\n".join(lines)


def choose_tiling(all_steps: list[Step], sizes: dict, n: int, band_rows: int | None) -> tuple[Tiling, arena.Plan, dict]:
    """The tiling with ``band_rows`` rows a band, or (None) the band height of the smallest arena,
    ties to the fewest extra MACs (the tallest band); also (arena, extra MACs) of every height tried."""
    oh = all_steps[n - 1].extra["rows"].oh
    if band_rows is not None and not 1 <= band_rows <= oh:
        raise ExportError(f"--patch-rows must be between 1 and {oh} (the first stage's output rows), got {band_rows}")
    tried = {}
    for r in [band_rows] if band_rows else range(1, oh + 1):
        t = tiling(all_steps[:n], r)
        tried[r] = (t, memory_plan(all_steps, sizes, n, t), extra_macs(all_steps[:n], t))
    best = min(tried, key=lambda r: (tried[r][1].arena_bytes, tried[r][2]))
    return tried[best][0], tried[best][1], {r: (v[1].arena_bytes, v[2]) for r, v in tried.items()}


def _patch(all_steps: list[Step], sizes: dict, patch) -> tuple:
    """(n, tiling, plan, record) of the patch-based first stage; ``patch`` True picks the band
    height, an int fixes it. A stage the tiler cannot run falls back to the untiled plan when the
    height is left to it (the record says why) and is an error when a height was asked for."""
    untiled = memory_plan(all_steps, sizes)
    try:
        n = first_stage(all_steps)
    except ExportError as e:
        if patch is True:
            return 0, None, untiled, {"applied": False, "reason": str(e), "arena_bytes_untiled": untiled.arena_bytes}
        raise
    t, plan, tried = choose_tiling(all_steps, sizes, n, None if patch is True else int(patch))
    macs, extra = sum(s.macs for s in all_steps), extra_macs(all_steps[:n], t)
    return n, t, plan, {
        "applied": True, "band_rows": t.band_rows, "bands": len(t.bands),
        "chosen": "--patch: the band height with the smallest arena, then the fewest extra MACs"
                  if patch is True else f"--patch-rows {t.band_rows}",
        "stage": [s.output for s in all_steps[:n]], "stage_ops": [s.op for s in all_steps[:n]],
        "band_buffer_rows": list(t.held[:-1]), "arena_bytes_untiled": untiled.arena_bytes,
        "arena_bytes": plan.arena_bytes, "arena_bytes_saved": untiled.arena_bytes - plan.arena_bytes,
        "arena_bytes_by_band_rows": {str(r): b for r, (b, _) in tried.items()},
        "extra_macs_by_band_rows": {str(r): m for r, (_, m) in tried.items()},
        "extra_macs": extra, "macs_untiled": macs, "extra_macs_fraction": round(extra / macs, 4) if macs else 0.0}


def write_model_c(proto, title: str = "model.int8.onnx", patch=None) -> tuple[str, dict]:
    """model.c's text for the C graph ``proto`` and what the record says about it (arena
    bytes, its lower bound, the tensors' offsets, MACs). ``patch`` (True, or rows per band) runs
    the first stage band by band (`first_stage`, `choose_tiling`); None keeps every op whole."""
    g = Graph(proto)
    all_steps = steps(g)
    sizes = {name: g.size(name) for step in all_steps for name in [*step.inputs, step.output]}
    n, t, memory, patched = (0, None, memory_plan(all_steps, sizes), None) if patch is None \
        else _patch(all_steps, sizes, patch)
    table, loop = _stage_loop(all_steps[:n], t, memory.offsets) if t else ("", "")
    _, c, h, w = g.shape[PIXELS]
    classes = g.shape[LOGITS][1]
    stage = (f"\n * The first {n} ops run band by band ({t.band_rows} output rows of {all_steps[n - 1].output} "
             f"a band, halo rows recomputed): patch-based inference as MCUNetV2's.") if t else ""
    text = f"""/* tinycnn int8 model from {title} (tinycnn export --format c), written by tinycnn.cwriter.
 * Memory: every intermediate tensor at a planned offset of one static arena ({memory.arena_bytes:,} bytes;
 * the largest set of tensors live at once is {memory.lower_bound:,} bytes); no heap, no recursion, no libm.{stage}
 * Bit-exact with onnxruntime on {title} when compiled without -ffast-math and without FMA contraction
 * (-std=c99 keeps GCC's off). */
#include <stdint.h>
#include <string.h>

{kernels_for({s.op for s in all_steps}, banded=t is not None)}
{"".join(s.constants for s in all_steps)}{table}
static int8_t arena[{max(memory.arena_bytes, 4)}];

void model(const uint8_t pixels[1][{c}][{h}][{w}], int8_t logits[1][{classes}]) {{
    const uint8_t *px = &pixels[0][0][0][0];
    int8_t *out = &logits[0][0];
{loop + chr(10) if loop else ""}{_body(all_steps[n:], memory.offsets, banded=t is not None)}
}}
"""
    info = {"arena_bytes": memory.arena_bytes, "lower_bound_bytes": memory.lower_bound,
            "lower_bound_of": "the largest sum of bytes of the int8 graph's tensors live at one op "
                              "(in-place outputs sharing their input's buffer)",
            "plan": "greedy by size (TFLM's GreedyMemoryPlanner), offsets aligned to 4 bytes",
            "macs": sum(s.macs for s in all_steps), "kernels": sorted({s.op for s in all_steps} - {"reshape"})}
    if patched is not None:
        info["patch"] = patched
    return text, info
