"""tinycnn's own C writer (issue 22, item 2): each op on a tiny int8 graph, compiled with the
system compiler (-std=c99 -Wall -Wextra -Werror -pedantic) and compared bit for bit with
onnxruntime on random images; the ops outside the supported set refused in one line.

A test graph is what `cgen.c_graph` hands the writer: uint8 ``pixels`` -> Cast -> Div by 255 ->
QuantizeLinear (scale 1/255, zero point -128: the full int8 range) -> the ops under test ->
Reshape to int8 ``logits`` [1, n]."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinycnn import arena, cgen, cwriter
from tinycnn.errors import ExportError

COMPILER = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler (cc or gcc) on PATH")
MS = "com.microsoft"
IMAGES = 40
MNIST_INT8 = Path(__file__).resolve().parents[1] / "experiments" / "results" / "mnist" / "sam" / "seed0" / "model.int8.onnx"
MAIN = r"""#include <stdio.h>
#include <stdint.h>
void model(const uint8_t pixels[1][%(c)d][%(h)d][%(w)d], int8_t logits[1][%(k)d]);
static uint8_t px[1][%(c)d][%(h)d][%(w)d];
static int8_t lg[1][%(k)d];
int main(int argc, char **argv) {
    FILE *in, *out;
    if (argc != 3 || (in = fopen(argv[1], "rb")) == NULL || (out = fopen(argv[2], "wb")) == NULL) {
        return 2;
    }
    while (fread(px, 1, sizeof px, in) == sizeof px) {
        model((const uint8_t (*)[%(c)d][%(h)d][%(w)d])px, lg);  /* C99 wants the const made explicit */
        if (fwrite(lg, 1, sizeof lg, out) != sizeof lg) {
            return 2;
        }
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : 2;
}
"""


class G:
    """A tiny test graph under construction: constants, nodes, a counter for names."""

    def __init__(self, rng, shape):
        self.rng, self.shape, self.inits, self.nodes, self.n = rng, shape, [], [], 0
        self.const("x_scale", np.float32(1 / 255)), self.const("x_zp", np.int8(-128))
        self.const("range", np.float32(255))
        self.nodes += [helper.make_node("Cast", ["pixels"], ["pf"], to=TensorProto.FLOAT),
                       helper.make_node("Div", ["pf", "range"], ["unit"]),
                       helper.make_node("QuantizeLinear", ["unit", "x_scale", "x_zp"], ["x"])]
        self.scale = {"x": ("x_scale", "x_zp")}

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qparams(self, name, scale, zp):
        self.scale[name] = (self.const(name + "_s", np.float32(scale)), self.const(name + "_z", np.int8(zp)))
        return self.scale[name]

    def node(self, op, inputs, domain="", scale=None, zp=0, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], domain=domain, name=f"n{self.n}", **attrs))
        if scale is not None:
            self.qparams(out, scale, zp)
        return out

    def conv(self, x, cin, cout, k=3, stride=1, pad=1, groups=1):
        w = self.rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
        ws = self.rng.uniform(0.002, 0.02, cout).astype(np.float32)
        n = self.n + 1
        inputs = [x, *self.scale[x], self.const(f"w{n}", w), self.const(f"ws{n}", ws),
                  self.const(f"wz{n}", np.zeros(cout, np.int8)), f"t{n}_s", f"t{n}_z",
                  self.const(f"b{n}", self.rng.integers(-3000, 3000, cout).astype(np.int32))]
        # |x - x_zp| ~ 128 and |w| ~ 64 on average: outputs spread over about +-50 of the int8 range
        y_scale = float(np.float32(self.scale_of(x)) * ws.mean() * np.sqrt(w[0].size) * 128 * 73 / 50)
        return self.node("QLinearConv", inputs, scale=y_scale, zp=int(self.rng.integers(-30, 30)),
                         kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)

    def scale_of(self, name):
        return next(numpy_helper.to_array(t) for t in self.inits if t.name == self.scale[name][0])

    def model(self, last):
        self.const("flat", np.array([1, -1], np.int64))
        self.nodes.append(helper.make_node("Reshape", [last, "flat"], ["logits"]))
        graph = helper.make_graph(self.nodes, "t", [helper.make_tensor_value_info(
            "pixels", TensorProto.UINT8, self.shape)], [helper.make_tensor_value_info("logits", TensorProto.INT8, None)],
            self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)])
        classes = cgen._write_shapes(proto, self.shape)  # as cgen.c_graph does
        del proto.graph.output[:]
        proto.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.INT8, [1, classes]))
        return proto


def compile_and_compare(proto, shape, tmp_path, rng, images=IMAGES):
    """model.c of ``proto`` built with -Werror, run on random images, against onnxruntime."""
    text, info = cwriter.write_model_c(proto)
    (tmp_path / "model.c").write_text(text)
    k = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim][1]
    (tmp_path / "main.c").write_text(MAIN % {"c": shape[1], "h": shape[2], "w": shape[3], "k": k})
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    r = subprocess.run([COMPILER, *flags, "model.c", "main.c", "-o", "run"], cwd=tmp_path, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    pixels = rng.integers(0, 256, (images, *shape[1:]), dtype=np.uint8)
    pixels.tofile(tmp_path / "in.u8")
    subprocess.run([str(tmp_path / "run"), "in.u8", "out.i8"], cwd=tmp_path, check=True)
    got = np.fromfile(tmp_path / "out.i8", np.int8).reshape(images, -1)
    session = __import__("onnxruntime").InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(["logits"], {"pixels": p[None]})[0] for p in pixels])
    assert got.shape == want.shape and np.array_equal(got, want), (got != want).sum()
    assert len(np.unique(want)) > 8  # the test exercises more than a saturated corner
    return text, info


CASES = {
    "conv3x3": lambda g: g.conv("x", 3, 6),
    "conv_stride2_pad1": lambda g: g.conv("x", 3, 5, stride=2),
    "conv_5x5_no_pad_stride2": lambda g: g.conv("x", 3, 4, k=5, stride=2, pad=0),
    "depthwise": lambda g: g.conv(g.conv("x", 3, 6, k=1, pad=0), 6, 6, groups=6),
    "depthwise_stride2": lambda g: g.conv(g.conv("x", 3, 4, k=1, pad=0), 4, 4, stride=2, groups=4),
    "grouped": lambda g: g.conv(g.conv("x", 3, 4, k=1, pad=0), 4, 6, groups=2),
    "maxpool_2x2_s1": lambda g: g.node("MaxPool", [g.conv("x", 3, 4)], kernel_shape=[2, 2], strides=[1, 1]),
    "maxpool_3x3_s2_pad1": lambda g: g.node("MaxPool", [g.conv("x", 3, 4)], kernel_shape=[3, 3], strides=[2, 2],
                                            pads=[1, 1, 1, 1]),
    "pad_reflect": lambda g: g.node("Pad", [g.conv("x", 3, 4), g.const("p", np.array([0, 0, 1, 2, 0, 0, 2, 1]))],
                                    mode="reflect"),
    "pad_edge": lambda g: g.node("Pad", ["x", g.const("p", np.array([0, 0, 2, 1, 0, 0, 1, 2]))], mode="edge"),
    "pad_constant": lambda g: g.node("Pad", ["x", g.const("p", np.array([0, 0, 1, 1, 0, 0, 2, 0])),
                                             g.const("v", np.int8(-7))], mode="constant"),
}


def _gap(g, x):
    out = f"t{g.n + 1}"
    return g.node("QLinearGlobalAveragePool", [x, *g.scale[x], *g.qparams(out, g.scale_of(x) * 0.7, 3)],
                  domain=MS, channels_last=0)


def _lookup(g, x, op="QLinearSigmoid", **attrs):
    out = f"t{g.n + 1}"
    return g.node(op, [x, *g.scale[x], *g.qparams(out, 1 / 256, -128)], domain=MS, **attrs)


def _binary(g, op, a, b, scale):
    n = g.n + 1
    return g.node(op, [a, *g.scale[a], b, *g.scale[b], *g.qparams(f"t{n}", scale, 5)], domain=MS)


def _mul_pair(g):
    a, b = g.conv("x", 3, 4), g.conv("x", 3, 4)
    return _binary(g, "QLinearMul", a, b, g.scale_of(a) * g.scale_of(b) * 60)


def _se(g):
    a = g.conv("x", 3, 6)
    gate = _lookup(g, g.conv(_gap(g, a), 6, 6, k=1, pad=0))
    return _binary(g, "QLinearMul", a, gate, g.scale_of(a) * 0.6)


CASES.update({
    "gap": lambda g: _gap(g, g.conv("x", 3, 6)),
    "sigmoid_table": lambda g: _lookup(g, g.conv("x", 3, 4)),
    "leaky_relu_table": lambda g: _lookup(g, g.conv("x", 3, 4), "QLinearLeakyRelu", alpha=0.1),
    "se_mul_broadcast": _se,
    "mul_equal_shapes": lambda g: _mul_pair(g),
    "residual_add": lambda g: _binary(g, "QLinearAdd", g.conv(g.conv("x", 3, 4), 4, 4), g.conv("x", 3, 4), 0.09),
})


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_is_bit_exact_with_onnxruntime(case, tmp_path):
    rng = np.random.default_rng(sorted(CASES).index(case))
    shape = [1, 3, 9, 8]
    g = G(rng, shape)
    compile_and_compare(g.model(CASES[case](g)), shape, tmp_path, rng)


def test_the_front_table_is_onnxruntimes_normalisation(tmp_path):
    rng = np.random.default_rng(7)
    shape = [1, 3, 4, 5]
    g = G(rng, shape)
    g.nodes[2:2] = [helper.make_node("Sub", ["unit", g.const("mean", np.array([.49, .48, .45], np.float32)
                                                             .reshape(1, 3, 1, 1))], ["centred"]),
                    helper.make_node("Div", ["centred", g.const("std", np.array([.25, .24, .26], np.float32)
                                                            .reshape(1, 3, 1, 1))], ["unit2"])]
    g.nodes[4].input[0] = "unit2"
    g.inits[0].CopyFrom(numpy_helper.from_array(np.float32(0.0157), "x_scale"))
    text, _ = compile_and_compare(g.model("x"), shape, tmp_path, rng, images=60)
    assert "front_table[768]" in text and "float" not in text.split("front_table")[1].split("};")[0]


def test_a_residual_add_may_write_over_its_dying_input(tmp_path):
    rng = np.random.default_rng(3)
    shape = [1, 3, 6, 6]
    g = G(rng, shape)
    skip = g.conv("x", 3, 4)
    out = _binary(g, "QLinearAdd", g.conv(skip, 4, 4), skip, 0.09)
    _, info = compile_and_compare(g.model(g.conv(out, 4, 2)), shape, tmp_path, rng)
    # x (108 B) dies into the first conv; skip (144 B) and its conv live at the add, whose output reuses one
    assert info["lower_bound_bytes"] == 288 and info["arena_bytes"] <= 292


def test_the_fused_multiply_add_is_rounded_once():
    """cwriter.exact_fma against float64 on values where double rounding cannot occur, and a
    case where the unfused product and sum differ from the fused result."""
    assert cwriter.exact_fma(np.float32(3), np.float32(0.1), np.float32(0.2)) == np.float32(0.1) * 3 + np.float32(0.2)
    x = np.float32(1 + 2 ** -12)  # x * x = 1 + 2^-11 + 2^-24, a tie that rounds down unfused
    z = np.float32(-(1 + 2 ** -11))
    assert cwriter.exact_fma(x, x, z) == np.float32(2 ** -24) and np.float32(x * x) + z == 0
    assert cwriter.mantissa_exponent(np.float32(0.75)) == (0xC00000, -24)
    assert cwriter.mantissa_exponent(np.float32(-3)) == (-0xC00000, -22)


def test_an_unsupported_op_is_one_error_naming_it_and_the_supported_ones(tmp_path):
    rng = np.random.default_rng(0)
    g = G(rng, [1, 3, 5, 5])
    proto = g.model(g.node("QLinearAveragePool", ["x", *g.scale["x"], *g.qparams("p", 1 / 255, -128)],
                           domain=MS, kernel_shape=[2, 2]))
    with pytest.raises(ExportError) as e:
        cwriter.write_model_c(proto)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "com.microsoft.QLinearAveragePool" in message
    assert all(op in message for op in ("QLinearConv", "MaxPool", "Pad", "QLinearAdd", "QLinearMul"))


def test_an_unsupported_op_in_a_real_file_leaves_nothing_behind(tmp_path, real_data_dir):
    from tinycnn.data import load_dataset

    proto = onnx.load(str(MNIST_INT8))
    pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    consumers = [n for n in proto.graph.node if pool.output[0] in n.input]
    proto.graph.node.insert(list(proto.graph.node).index(pool) + 1,
                            helper.make_node("Identity", [pool.output[0]], ["copied"], name="the_identity"))
    for n in consumers:
        n.input[list(n.input).index(pool.output[0])] = "copied"
    bad = tmp_path / "bad.int8.onnx"
    onnx.save(proto, str(bad))
    out = tmp_path / "out"
    out.mkdir()
    test = load_dataset("mnist", real_data_dir).test.subset(3)
    with pytest.raises(ExportError, match=r"does not support the op Identity \(node 'the_identity'\); supported: "):
        cgen.export_c(bad, out, test.x, test.y)
    assert list(out.iterdir()) == []


def test_arena_offsets_keep_live_tensors_apart_on_the_mnist_final():
    g = cwriter.Graph(cgen.c_graph(MNIST_INT8))
    all_steps = cwriter.steps(g)
    sizes = {name: g.size(name) for s in all_steps for name in [*s.inputs, s.output]}
    plan = arena.plan(cwriter.lifetimes(all_steps, sizes))
    assert not arena.overlapping(plan) and plan.arena_bytes <= 1.1 * plan.lower_bound
    assert any(len(b.names) > 1 for b in plan.buffers)  # the sigmoid or the SE multiply works in place
