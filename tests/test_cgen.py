"""C export (issue 17, item 5): the committed MNIST final as C source, compiled with the system
C compiler and compared with onnxruntime's int8 logits bit for bit.

The module exports the final once with ``--format c`` into a temporary folder, its C check
limited to 200 test images (the real export checks all 10,000, once); a second build runs
200 golden vectors through the harness's own comparison.
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycnn import cgen, export
from tinycnn.data import load_dataset
from tinycnn.errors import ExportError

ROOT = Path(__file__).resolve().parents[1]
MNIST_FINAL = ROOT / "experiments" / "results" / "mnist" / "sam" / "seed0" / "model.pt"
COMPILER = shutil.which("cc") or shutil.which("gcc")
CHECK = 200


@pytest.fixture(scope="module")
def c_export(real_data_dir, tmp_path_factory):
    if COMPILER is None:
        pytest.skip("no C compiler (cc or gcc) on PATH: the C export compiles what it generates")
    out = tmp_path_factory.mktemp("mnist-c")
    record = export.export_run(MNIST_FINAL, out, ("c",), data_dir=real_data_dir, c_check=CHECK)
    return out, record


@pytest.fixture(scope="module")
def test_images(real_data_dir):
    return load_dataset("mnist", real_data_dir).test.subset(CHECK)


def test_c_is_bit_exact_with_onnxruntime_on_200_test_images(c_export):
    out, record = c_export
    check = record["c"]["check"]
    assert check["images"] == CHECK and check["bit_exact"] == CHECK and check["top1_agreement"] == 1.0
    assert check["golden_images"] == check["golden_bit_exact"] == cgen.GOLDEN_IMAGES
    assert check["test_accuracy"] >= 0.98 and check["flags"] == "-std=c99 -O2 -Wall -Wextra -Werror"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*export._file_names(("c",)), export.RECORD_FILE])


def test_200_golden_vectors_run_by_the_harness_itself(c_export, test_images, tmp_path):
    """Golden vectors from onnxruntime on the exported int8 file, compared inside the C harness."""
    out, _ = c_export
    for name in (cgen.C_FILE, cgen.H_FILE, cgen.MAIN_FILE):
        shutil.copy(out / name, tmp_path / name)
    reference = cgen.reference_logits(out / export.INT8_FILE, test_images.x)
    assert reference.dtype == np.int8 and reference.shape == (CHECK, 10)
    cgen.write_golden(tmp_path / cgen.GOLDEN_FILE, test_images.x, reference)
    exe = cgen.build_harness(tmp_path, tmp_path, COMPILER)
    assert cgen.run_golden(exe) == (CHECK, CHECK)
    assert np.array_equal(cgen.run_c(exe, test_images.x, tmp_path), reference)


def test_int8_logits_are_what_the_int8_file_dequantises(c_export, test_images):
    out, record = c_export
    reference = cgen.reference_logits(out / export.INT8_FILE, test_images.x[:20])
    floats = export.run_onnx(out / export.INT8_FILE, test_images.x[:20])
    scale, zero = np.float32(record["c"]["logit_scale"]), np.float32(record["c"]["logit_zero_point"])
    assert np.array_equal((reference.astype(np.float32) - zero) * scale, floats)


def test_no_heap_no_libm_and_a_static_arena_near_its_lower_bound(c_export):
    out, record = c_export
    source = (out / cgen.C_FILE).read_text()
    assert not cgen.HEAP_CALL.search(source) and "fopen" not in source  # no heap, no weights file
    assert "static int8_t arena[" in source and "math.h" not in source
    memory = record["c"]["memory"]
    assert memory["lower_bound_bytes"] <= memory["arena_bytes"] <= 1.1 * memory["lower_bound_bytes"]
    assert memory["lower_bound_bytes"] >= 2 * 7_840  # the two largest activations, live at once
    targets = [record["c"]["object"]] + ([record["c"]["cortex_m4"]] if record["c"]["cortex_m4"] else [])
    for obj in targets:  # built with -Wall -Wextra -Werror -pedantic: a warning would have failed it
        assert "-Werror" in obj["flags"] and "-pedantic" in obj["flags"]
        assert obj["heap"] is False and obj["libm_calls"] == []
        assert set(obj["external_calls"]) <= {"memcpy", "memset"}, obj["external_calls"]
        assert 2_000 < obj["flash_bytes"] < 16_000 and obj["text"] + obj["data"] == obj["flash_bytes"]
        assert obj["bss"] >= memory["arena_bytes"] and 0 < obj["stack_bytes"] < 512  # the arena is not on the stack
    assert record["c"]["flash_of"] == ("cortex_m4" if shutil.which(cgen.ARM_COMPILER) else
                                       "object (host: no arm-none-eabi-gcc on PATH)")
    assert record["c"]["generator"] == record["versions"]["generator"] == f"tinycnn {cgen.generator_version()}"
    assert all(record["c"]["files"][name]["bytes"] == (out / name).stat().st_size for name in cgen.C_FILES)


def test_header_declares_the_generated_entry_point(c_export, tmp_path):
    out, record = c_export
    h = (out / cgen.H_FILE).read_text()
    assert record["c"]["api"] in h and "void model(const uint8_t pixels[1][1][28][28], int8_t logits[1][10]);" in h
    # model.c compiled with model.h in front: a declaration that did not match would not compile
    r = subprocess.run([COMPILER, "-std=c99", "-fsyntax-only", "-include", str(out / cgen.H_FILE),
                        str(out / cgen.C_FILE)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([COMPILER, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        str(out / cgen.MAIN_FILE)], capture_output=True, text=True, check=False, cwd=out)
    assert r.returncode == 0, r.stderr


def test_a_float_onnx_file_is_refused_in_one_line(c_export, test_images, tmp_path):
    out, _ = c_export
    with pytest.raises(ExportError, match="not an int8 QOperator file") as e:
        cgen.export_c(out / export.FLOAT_FILE, tmp_path, test_images.x[:5], test_images.y[:5])
    assert "no QLinearConv" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="cannot read .* as an ONNX file"):
        cgen.c_graph(corrupt)


def test_missing_compiler_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from tinycnn.cli import main

    with pytest.raises(ExportError, match="no C compiler \\('no-such-cc'\\) found"):
        cgen.find_compiler("no-such-cc")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "o"
    assert main(["export", str(MNIST_FINAL), "--out", str(out), "--format", "c"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no C compiler (cc or gcc) found" in err
    assert not out.exists()
