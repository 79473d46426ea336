"""The patch-based first stage (issue 22, item 4; MCUNetV2): `cwriter.write_model_c(..., patch=)`
runs the ops up to the first downsampling band by band into small band buffers. Its C must
give the untiled C's int8 logits bit for bit (and so onnxruntime's), at every band height, in a
smaller arena, with the extra MACs of the recomputed halo rows counted right."""
import subprocess

import numpy as np
import onnxruntime
import pytest
from test_cwriter import COMPILER, MAIN, MNIST_INT8, G, _gap

from tinycnn import arena, cgen, cwriter
from tinycnn.errors import ExportError

pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler (cc or gcc) on PATH")


def run_c(text: str, shape: list, classes: int, pixels: np.ndarray, where) -> np.ndarray:
    """model.c ``text`` built with -Werror into ``where`` and run on ``pixels``: int8 logits."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "model.c").write_text(text)
    (where / "main.c").write_text(MAIN % {"c": shape[1], "h": shape[2], "w": shape[3], "k": classes})
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    r = subprocess.run([COMPILER, *flags, "model.c", "main.c", "-o", "run"], cwd=where, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    pixels.tofile(where / "in.u8")
    subprocess.run([str(where / "run"), "in.u8", "out.i8"], cwd=where, check=True)
    return np.fromfile(where / "out.i8", np.int8).reshape(len(pixels), classes)


def _blur_stage(g: G, pad_mode: str = "reflect"):
    """conv 3x3, conv 3x3, MaxPool 2x2 stride 1, an asymmetric Pad, a depthwise 3x3 stride 2
    (BlurPool's shape), then a 3x3 conv after the stage."""
    x = g.conv(g.conv("x", 3, 4), 4, 4)
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1])
    g.scale[x] = g.scale[f"t{g.n - 1}"]
    x = g.node("Pad", [x, g.const(f"p{g.n}", np.array([0, 0, 1, 2, 0, 0, 2, 1]))], mode=pad_mode)
    g.scale[x] = g.scale[f"t{g.n - 2}"]
    return g.conv(g.conv(x, 4, 4, stride=2, pad=0, groups=4), 4, 3)


@pytest.mark.parametrize("pad_mode", ["reflect", "edge"])
def test_a_blur_stage_tiled_at_every_band_height_is_the_untiled_c(pad_mode, tmp_path):
    rng = np.random.default_rng(11)
    shape = [1, 3, 11, 9]
    g = G(rng, shape)
    proto = g.model(_blur_stage(g, pad_mode))
    pixels = rng.integers(0, 256, (30, *shape[1:]), dtype=np.uint8)
    classes = proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    text, untiled = cwriter.write_model_c(proto)
    want = run_c(text, shape, classes, pixels, tmp_path / "whole")
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(want, np.concatenate([session.run(["logits"], {"pixels": p[None]})[0] for p in pixels]))
    oh = 6  # (11 + 3 - 1 - 3) // 2 + 1 rows out of the stride-2 conv
    for rows in range(1, oh + 1):
        text, info = cwriter.write_model_c(proto, patch=rows)
        assert info["patch"]["applied"] and info["patch"]["bands"] == -(-oh // rows)
        assert np.array_equal(run_c(text, shape, classes, pixels, tmp_path / str(rows)), want), rows
    _, best = cwriter.write_model_c(proto, patch=True)
    assert best["arena_bytes"] < untiled["arena_bytes"] == best["patch"]["arena_bytes_untiled"]
    assert best["arena_bytes"] == min(best["patch"]["arena_bytes_by_band_rows"].values())


def test_the_mnist_final_tiled_is_the_untiled_c_on_test_images_and_noise(tmp_path, real_data_dir):
    from tinycnn.data import load_dataset

    proto = cgen.c_graph(MNIST_INT8)
    test = load_dataset("mnist", real_data_dir).test.subset(300)
    rng = np.random.default_rng(5)
    pixels = np.concatenate([test.x.numpy().astype(np.uint8),
                             rng.integers(0, 256, (100, 1, 28, 28), dtype=np.uint8)])
    text, untiled = cwriter.write_model_c(proto)
    want = run_c(text, [1, 1, 28, 28], 10, pixels, tmp_path / "whole")
    assert np.array_equal(want[:300], cgen.reference_logits(MNIST_INT8, test.x))
    for patch in (True, 3):
        text, info = cwriter.write_model_c(proto, patch=patch)
        assert np.array_equal(run_c(text, [1, 1, 28, 28], 10, pixels, tmp_path / str(patch)), want), patch
        assert info["arena_bytes"] < untiled["arena_bytes"] and info["patch"]["extra_macs"] > 0
    _, best = cwriter.write_model_c(proto, patch=True)
    assert best["arena_bytes"] <= 8192 and best["patch"]["stage_ops"][-1] == "dwconv"


def test_band_buffers_and_the_stage_output_never_overlap_while_live():
    g = cwriter.Graph(cgen.c_graph(MNIST_INT8))
    all_steps = cwriter.steps(g)
    sizes = {name: g.size(name) for s in all_steps for name in [*s.inputs, s.output]}
    n = cwriter.first_stage(all_steps)
    assert [s.op for s in all_steps[:n]] == ["front", "conv", "dwconv", "conv", "dwconv", "conv", "maxpool", "pad",
                                             "dwconv"]
    for rows in (1, 2, 5, 14):
        plan = cwriter.memory_plan(all_steps, sizes, n, cwriter.tiling(all_steps[:n], rows))
        assert not arena.overlapping(plan)


def test_extra_macs_counted_by_hand(tmp_path):
    """conv 3x3 pad 1 (1 -> 2 channels, 8x4) then conv 3x3 stride 2 pad 1: 4 output rows. One
    row a band reads input rows [0,2) [1,4) [3,6) [5,8) of the first conv: 11 rows computed for
    8, each 2 * 4 * 1 * 9 = 72 MACs, so 3 * 72 extra; two rows a band, [0,4) [3,8): 72 extra."""
    rng = np.random.default_rng(2)
    shape = [1, 1, 8, 4]
    g = G(rng, shape)
    proto = g.model(g.conv(g.conv("x", 1, 2), 2, 2, stride=2))
    extra = {rows: cwriter.write_model_c(proto, patch=rows)[1]["patch"]["extra_macs"] for rows in (1, 2, 4)}
    assert extra == {1: 3 * 72, 2: 72, 4: 0}
    assert cwriter.write_model_c(proto, patch=1)[1]["patch"]["macs_untiled"] == 2 * 8 * 4 * 9 + 2 * 4 * 2 * 2 * 9


def test_a_stage_the_tiler_cannot_run_falls_back_or_is_an_error_naming_the_op():
    rng = np.random.default_rng(4)
    g = G(rng, [1, 3, 8, 8])
    proto = g.model(g.conv(_gap(g, g.conv("x", 3, 4)), 4, 2, k=1, pad=0))  # the pool comes before any stride
    text, info = cwriter.write_model_c(proto, patch=True)
    assert not info["patch"]["applied"] and "cannot run gap" in info["patch"]["reason"]
    assert "band" not in text.split("void model")[1] and info["arena_bytes"] == info["patch"]["arena_bytes_untiled"]
    with pytest.raises(ExportError, match="cannot run gap"):
        cwriter.write_model_c(proto, patch=2)
    g = G(rng, [1, 3, 8, 8])
    with pytest.raises(ExportError, match="--patch-rows must be between 1 and 4"):
        cwriter.write_model_c(g.model(g.conv("x", 3, 4, stride=2)), patch=5)


def test_the_record_says_whether_and_how_the_stage_was_tiled(tmp_path, real_data_dir):
    from tinycnn.data import load_dataset

    test = load_dataset("mnist", real_data_dir).test.subset(2)
    logits = cgen.reference_logits(MNIST_INT8, test.x)
    assert "patch" not in cgen.write_c(MNIST_INT8, tmp_path, test.x, logits)  # the default: as before
    record = cgen.write_c(MNIST_INT8, tmp_path, test.x, logits, patch=3)["patch"]
    assert record["chosen"] == "--patch-rows 3" and record["bands"] == 5 and record["arena_bytes"] <= 8192
    assert "for (int band = 0; band < 5; ++band)" in (tmp_path / cgen.C_FILE).read_text()
    assert "--patch:" in cgen.write_c(MNIST_INT8, tmp_path, test.x, logits, patch=True)["patch"]["chosen"]
