"""Export (issue 17): float ONNX and int8 ONNX of the committed finals, checked with onnxruntime.

The MNIST final is exported once for the module (float files, int8 file and export.json, as
`tinycnn export` writes them); its int8 accuracy is the real number on the full test set.
"""
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from tinycnn import export
from tinycnn.checkpoint import load_model
from tinycnn.data import load_dataset
from tinycnn.errors import ExportError

ROOT = Path(__file__).resolve().parents[1]
MNIST_FINAL = ROOT / "experiments" / "results" / "mnist" / "sam" / "seed0" / "model.pt"
CIFAR_FINAL = ROOT / "experiments" / "results" / "cifar10" / "long" / "seed0" / "model.pt"


@pytest.fixture(scope="module")
def mnist_export(real_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist-export")
    record = export.export_run(MNIST_FINAL, out, ("int8",), data_dir=real_data_dir)
    return out, record


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _batch_dim(path):
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else dim.dim_param


def test_float_onnx_agrees_with_pytorch_on_1000_test_images(mnist_export, real_data_dir):
    out, record = mnist_export
    for name in (export.FLOAT_FILE, export.DYNAMIC_FILE):
        check = record["float"]["check"][name]
        assert check["images"] == 1000 and check["max_abs_logit_diff"] < 1e-4 and check["top1_agreement"] == 1.0
    # and again from the files on disk, outside export_run's bookkeeping
    test = load_dataset("mnist", real_data_dir).test
    again = export.check_onnx(out / export.FLOAT_FILE, load_model(MNIST_FINAL), test.x[:1000])
    assert again["max_abs_logit_diff"] < 1e-4 and again["top1_agreement"] == 1.0
    assert _batch_dim(out / export.FLOAT_FILE) == 1 and _batch_dim(out / export.DYNAMIC_FILE) == "batch"


def test_float_graph_is_folded_standard_and_int8_friendly(mnist_export):
    out, _ = mnist_export
    graph = onnx.load(str(out / export.FLOAT_FILE)).graph
    ops = [n.op_type for n in graph.node]
    assert "BatchNormalization" not in ops and "ReduceMean" not in ops
    assert ops.count("GlobalAveragePool") == 2  # Squeeze-Excite's gate and the head
    assert "Gemm" not in ops and "MatMul" not in ops
    assert ops[-2:] == ["Conv", "Reshape"]  # the linear head as a 1x1 conv, then flatten
    assert {n.domain for n in graph.node} <= {""}
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    assert str(ROOT) not in str(graph) and "stack_trace" not in str(graph)  # no machine paths in the file


def test_int8_file_is_qoperator_and_keeps_mnist_accuracy(mnist_export, real_data_dir):
    out, record = mnist_export
    ops = _ops(out / export.INT8_FILE)
    assert "QLinearConv" in ops and "Conv" not in ops and "QLinearGlobalAveragePool" in ops
    test = load_dataset("mnist", real_data_dir).test
    accuracy = export.onnx_accuracy(out / export.INT8_FILE, test)
    assert len(test) == 10_000 and accuracy == record["int8"]["test_accuracy"] >= 0.99
    assert record["float"]["test_accuracy"] >= 0.992
    assert record["int8"]["int8_weight_bytes"] <= 2000  # issue 17's target for the MNIST final
    assert record["int8"]["check"]["top1_agreement"] >= 0.99


def test_export_json_describes_the_files_beside_it(mnist_export):
    out, record = mnist_export
    assert json.loads((out / export.RECORD_FILE).read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [export.FLOAT_FILE, export.DYNAMIC_FILE, export.INT8_FILE, export.RECORD_FILE])
    files = {**record["float"]["files"], **record["int8"]["files"]}
    assert all(files[name]["bytes"] == (out / name).stat().st_size for name in files)
    assert record["int8"]["calibration"]["source"] == "train" and record["int8"]["calibration"]["images"] == 500
    assert list(record["float"]["ops"]) == ["ai.onnx"] and "QLinearConv" in record["int8"]["ops"]["ai.onnx"]
    assert record["versions"]["onnxruntime_version"] and record["versions"]["onnx_version"]


def test_cifar10_final_exports_and_agrees_with_pytorch(real_data_dir, tmp_path):
    if not (real_data_dir / "cifar10.npz").exists():
        pytest.skip("cifar10.npz not found")
    model = load_model(CIFAR_FINAL)
    path = export.export_onnx(model, tmp_path / "model.onnx", batch=1)
    images = load_dataset("cifar10", real_data_dir).test.x[:200]
    check = export.check_onnx(path, model, images)
    assert check["max_abs_logit_diff"] < 1e-4 and check["top1_agreement"] == 1.0
    ops = _ops(path)
    assert "BatchNormalization" not in ops and "ReduceMean" not in ops and ops.count("GlobalAveragePool") == 4


def test_empty_calibration_set_is_refused(mnist_export, tmp_path):
    out, _ = mnist_export
    empty = torch.zeros((0, 1, 28, 28), dtype=torch.uint8)
    with pytest.raises(ExportError, match="calibration set is empty"):
        export.quantize_int8(out / export.FLOAT_FILE, tmp_path / "int8.onnx", empty)
    assert not (tmp_path / "int8.onnx").exists()


def test_a_failed_export_leaves_nothing_behind(real_data_dir, tmp_path, monkeypatch):
    calls = []

    def fail_second(model, path, *, batch=1):
        calls.append(path)
        Path(path).write_bytes(b"half")
        if len(calls) == 2:
            raise ExportError("cannot export this op")
        return Path(path)

    monkeypatch.setattr(export, "export_onnx", fail_second)
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "model.onnx").write_bytes(b"previous")
    for out in (existing, tmp_path / "new" / "deeper"):
        with pytest.raises(ExportError, match="cannot export this op"):
            export.export_run(MNIST_FINAL, out, ("onnx",), data_dir=real_data_dir)
        calls.clear()
    assert [p.name for p in existing.iterdir()] == ["model.onnx"]
    assert (existing / "model.onnx").read_bytes() == b"previous"
    assert not (tmp_path / "new").exists()


def _bad_inputs(tmp_path) -> dict:
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(MNIST_FINAL.read_bytes()[:100])
    out = str(tmp_path / "o")
    return {"corrupt model": ([str(corrupt), "--out", out], "is corrupt, truncated or not a tinycnn-model file"),
            "unwritable out": ([str(MNIST_FINAL), "--out", str(corrupt / "sub")], "cannot write to the output directory"),
            "calibration 0": ([str(MNIST_FINAL), "--out", out, "--calibration", "0"], "--calibration must be"),
            "unknown format": ([str(MNIST_FINAL), "--out", out, "--format", "tflite"], "accepted: onnx, int8, c")}


def test_bad_input_from_the_command_line_is_one_line_exit_2(tmp_path):
    args, expected = _bad_inputs(tmp_path)["corrupt model"]
    r = subprocess.run([sys.executable, "-m", "tinycnn", "export", *args], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and expected in r.stderr
    assert "Traceback" not in r.stderr + r.stdout and not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["corrupt model", "unwritable out", "calibration 0", "unknown format"])
def test_every_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    """The same `main` in this process (a subprocess per case would cost seconds of imports)."""
    from tinycnn.cli import main

    args, expected = _bad_inputs(tmp_path)[case]
    assert main(["export", *args]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and expected in captured.err and not captured.out
    assert not (tmp_path / "o").exists()
