"""Deployment files for a trained model: float ONNX (fixed and dynamic batch) and int8 ONNX,
each checked with onnxruntime against PyTorch (issue 17).

What goes into the float file is `deploy.deploy`'s network (re-parameterised blocks fused,
every conv -> BatchNorm folded), normalisation included, so the file takes plain [0, 1]
images like the model file. Two export-time swaps make it readable by int8 runtimes and C
generators, computing the same function:

* every global average pool (the head's and Squeeze-Excite's) is written as ONNX's
  ``GlobalAveragePool``: the exporter turns ``adaptive_avg_pool2d(x, 1)`` (and ``x.mean``)
  into ``ReduceMean``, which onnxruntime's quantiser leaves in float, while
  ``GlobalAveragePool`` becomes ``QLinearGlobalAveragePool``;
* the linear head is written as a 1x1 conv (then flatten), so it quantises to a
  ``QLinearConv`` like every other layer instead of ``QGemm``, whose requantisation a C
  generator reproduces only to 1 LSB.

The exporter is torch's dynamo one (``dynamo=True``): the legacy TorchScript exporter fails on
BlurPool's kernel, expanded from a traced channel count; dynamo folds it to a constant.

The int8 file is onnxruntime's static post-training quantisation in QOperator form
(QLinearConv and friends): per-channel symmetric int8 weights, int8 activations, MinMax
ranges calibrated on training images only. QLinearConv, QuantizeLinear and DequantizeLinear
are standard ONNX; the int8 pool, sigmoid, add and mul are onnxruntime's com.microsoft ops
(QLinearGlobalAveragePool, ...), listed per file under "ops" in export.json. It is quantised from the fixed-batch (1 x C x H x W)
float file, the shape a microcontroller runs, and it is that very file whose accuracy is
measured, one image per call (see `run_onnx`).

The C files (``--format c``, which implies int8) are generated from that int8 file by
`cgen` (tinycnn's own arena-planned writer, `cwriter`): model.c, model.h, golden vectors and a harness, compiled with the
system C compiler and compared with onnxruntime's int8 logits bit for bit on the test set.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cgen
from .atomic import atomic_write
from .batches import to_float
from .blocks import GAPHead, SqueezeExcite
from .checkpoint import load_model
from .data import Dataset, Split, load_dataset
from .datasets import dataset_info
from .deploy import deploy
from .errors import ExportError, TinyCNNError
from .evaluate import predict_logits
from .provenance import environment, utc_now
from .results import MODEL, portable, write_json

FORMATS = ("onnx", "int8", "c")  # each includes the ones before it
FLOAT_FILE, DYNAMIC_FILE, INT8_FILE, RECORD_FILE = "model.onnx", "model.dynamic.onnx", "model.int8.onnx", "export.json"
OPSET = 18
INPUT, OUTPUT = "image", "logits"
CHECK_IMAGES = 1000  # test images on which every file is compared with PyTorch
DEFAULT_CALIBRATION = 500  # training images for the int8 ranges; MNIST final: 100-10,000 give 99.21-99.24%
CALIBRATION_SEED = 0
EVAL_BATCH = 500  # images per onnxruntime call for a dynamic-batch file
QUANTISATION = {"tool": "onnxruntime.quantization.quantize_static", "format": "QOperator",
                "weights": "int8, per channel, symmetric", "activations": "int8, per tensor, asymmetric"}


def _require_runtime() -> None:
    """onnx, onnxruntime and onnxscript are the `export` extra, not core dependencies."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"exporting needs {', '.join(missing)}, which are not installed; "
                          f"install them with: pip install 'tinycnn[export]'")
    if not hasattr(torch.onnx, "ops"):
        raise ExportError(f"exporting needs a torch with torch.onnx.ops (tested with 2.14.1); "
                          f"this is torch {torch.__version__}")


# --- the export form: same function, ONNX-friendly ops ---------------------------------

def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, 1)``, written into an ONNX export as one GlobalAveragePool node."""
    if torch.onnx.is_in_onnx_export():
        return torch.onnx.ops.symbolic("GlobalAveragePool", (x,), {}, dtype=x.dtype,
                                       shape=(x.shape[0], x.shape[1], 1, 1), version=1)
    return F.adaptive_avg_pool2d(x, 1)


class ExportSqueezeExcite(nn.Module):
    """`blocks.SqueezeExcite` with its pool as GlobalAveragePool; same modules, same weights."""

    def __init__(self, se: SqueezeExcite) -> None:
        super().__init__()
        self.down, self.up, self.act, self.gate = se.down, se.up, se.act, se.gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.up(self.act(self.down(global_avg_pool(x)))))


class ConvHead(nn.Module):
    """`blocks.GAPHead` as GlobalAveragePool -> 1x1 conv -> flatten: the linear layer's weight
    viewed as a [classes, C, 1, 1] kernel, so logits equal the head's up to float rounding."""

    def __init__(self, head: GAPHead) -> None:
        super().__init__()
        fc = head.fc
        self.conv = nn.Conv2d(fc.in_features, fc.out_features, 1, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(fc.weight.view(fc.out_features, fc.in_features, 1, 1))
            self.conv.bias.copy_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.conv(global_avg_pool(x)), 1)


def _swap_for_export(module: nn.Module) -> nn.Module:
    if isinstance(module, SqueezeExcite):
        return ExportSqueezeExcite(module)
    if isinstance(module, GAPHead):
        return ConvHead(module)
    for name, child in module.named_children():
        setattr(module, name, _swap_for_export(child))
    return module


def export_form(model: nn.Module) -> nn.Module:
    """What goes into the ONNX file: `deploy`'s copy (fused, BN folded, eval mode, CPU) with
    the export-time swaps above. The model itself is untouched."""
    return _swap_for_export(deploy(model).cpu()).eval()


# --- float ONNX ----------------------------------------------------------------------------

def _input_shape(model: nn.Module) -> tuple[int, int, int]:
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError("export needs a tinycnn model (one with a .spec naming its dataset)")
    info = dataset_info(spec.dataset)
    return info.channels, info.size, info.size


def _onnx_proto(model: nn.Module, batch: int | None):
    """The ONNX ModelProto of ``model``'s export form, batch fixed (an int) or dynamic (None)."""
    form = export_form(model)
    example = torch.rand(batch or 2, *_input_shape(model))
    dynamic = None if batch else ({0: torch.export.Dim("batch")},)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(form, (example,), dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
                                        input_names=[INPUT], output_names=[OUTPUT], verbose=False)
    except Exception as e:  # the exporter's many error types all mean "this network does not export"
        raise ExportError(f"{model.spec.arch!r} could not be exported to ONNX: "
                          f"{type(e).__name__}: {_first_line(e)}") from e
    return _stripped(program.model_proto, model)


def _stripped(proto, model: nn.Module):
    """The exporter annotates every node with its Python stack trace and module path (absolute
    paths of this machine: 49 of the 63 KB of the MNIST final's file): dropped, so a file holds the network
    only and the same model exports to the same bytes anywhere. The model keeps two labels."""
    import onnx

    graph = proto.graph
    for item in [*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        del item.metadata_props[:]
        item.doc_string = ""
    del graph.metadata_props[:]
    graph.doc_string = ""
    onnx.helper.set_model_props(proto, {"tinycnn.dataset": model.spec.dataset, "tinycnn.arch": model.spec.arch})
    return proto


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def _check_standard(proto, what: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported {what} ONNX graph is not valid: {_first_line(e)}") from e
    custom = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(f"the exported {what} ONNX graph uses non-standard ops: {', '.join(custom)}")


def export_onnx(model: nn.Module, path: str | os.PathLike, *, batch: int | None = 1) -> Path:
    """Write ``model`` as a float ONNX file (opset 18, standard ops only): input ``image``
    float32 [batch, C, H, W] in [0, 1] (``batch=None``: any batch size), output ``logits``."""
    _require_runtime()
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be a positive size or None (dynamic), got {batch}")
    proto = _onnx_proto(model, batch)
    _check_standard(proto, "float")
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


# --- running ONNX files -----------------------------------------------------------------

def _session(path: str | os.PathLike):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the CLI's --threads, OMP_NUM_THREADS in tests
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ExportError(f"onnxruntime cannot load {path}: {_first_line(e)}") from e


def _fixed_batch(session) -> int | None:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def run_onnx(path_or_session, images: torch.Tensor) -> np.ndarray:
    """float32 logits of uint8 NCHW ``images`` under onnxruntime: in chunks of `EVAL_BATCH`
    for a dynamic-batch file, or one call per batch of the file's own fixed size (1 for
    model.onnx and model.int8.onnx: the file that ships is the file that is measured)."""
    session = _session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else path_or_session
    name = session.get_inputs()[0].name
    step = _fixed_batch(session) or EVAL_BATCH
    if len(images) % step:
        raise ExportError(f"{len(images)} images do not fill batches of the file's fixed size {step}")
    out = [session.run(None, {name: to_float(images[i:i + step]).numpy()})[0] for i in range(0, len(images), step)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def check_onnx(onnx_path: str | os.PathLike, model: nn.Module, images: torch.Tensor) -> dict:
    """onnxruntime against PyTorch (the model in eval mode, as trained) on uint8 ``images``:
    the largest |logit difference| and the share of images whose top-1 class agrees."""
    if len(images) == 0:
        raise ExportError("check_onnx needs at least one image")
    reference = predict_logits(model, images).cpu().numpy()
    got = run_onnx(onnx_path, images)
    return {"images": len(images), "max_abs_logit_diff": float(np.abs(got - reference).max()),
            "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean())}


def onnx_accuracy(onnx_path: str | os.PathLike, split: Split) -> float:
    """Top-1 accuracy of an ONNX file on a whole split, run by onnxruntime."""
    if len(split) == 0:
        raise ExportError("onnx_accuracy needs a non-empty split")
    pred = run_onnx(onnx_path, split.x).argmax(1)
    return float((pred == split.y.numpy()).mean())


# --- int8 ----------------------------------------------------------------------------------

def _calibration_reader(session_input: str, batch: int, images: torch.Tensor):
    from onnxruntime.quantization import CalibrationDataReader

    class Images(CalibrationDataReader):
        """uint8 training images as float [0, 1] batches of the float file's input size."""

        def __init__(self) -> None:
            self.batches = iter(range(0, len(images), batch))

        def get_next(self):
            start = next(self.batches, None)
            return None if start is None else {session_input: to_float(images[start:start + batch]).numpy()}

    return Images()


def quantize_int8(float_onnx: str | os.PathLike, out_path: str | os.PathLike, calibration_images: torch.Tensor) -> Path:
    """Static int8 quantisation of a float ONNX file with onnxruntime: QOperator format,
    per-channel symmetric int8 weights, int8 activations, MinMax ranges over the uint8
    ``calibration_images`` (training images: never test images)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration_images) == 0:
        raise ExportError("the calibration set is empty: int8 ranges need at least one training image "
                          "(e.g. --calibration 500)")
    session = _session(float_onnx)
    fixed = _fixed_batch(session)
    if fixed and len(calibration_images) % fixed:
        raise ExportError(f"{len(calibration_images)} calibration images do not fill batches of the file's "
                          f"fixed size {fixed}")
    batch = fixed or EVAL_BATCH
    reader = _calibration_reader(session.get_inputs()[0].name, batch, calibration_images)
    with tempfile.TemporaryDirectory(prefix="tinycnn-int8-") as tmp:
        target = Path(tmp) / "model.int8.onnx"
        try:
            with _quiet_quantiser():
                quantize_static(str(float_onnx), str(target), reader, quant_format=QuantFormat.QOperator,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
        except TinyCNNError:
            raise
        except Exception as e:
            raise ExportError(f"{float_onnx} could not be quantised to int8: "
                              f"{type(e).__name__}: {_first_line(e)}") from e
        data = target.read_bytes()
    _check_quantised(data, float_onnx)
    atomic_write(out_path, lambda f: f.write(data))
    return Path(out_path)


@contextlib.contextmanager
def _quiet_quantiser():
    """onnxruntime's quantiser logs advice on the root logger (run its pre-processing, prefer
    QDQ on x64): neither applies to a graph already folded and meant for int8 runtimes."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def ops_by_domain(onnx_path: str | os.PathLike) -> dict[str, list[str]]:
    """The op types of a file's graph, by domain ("ai.onnx" for the standard set): onnxruntime's
    int8 pools, sigmoid, add and mul are com.microsoft ops (QLinearGlobalAveragePool, ...)."""
    import onnx

    found: dict[str, set[str]] = {}
    for node in onnx.load(str(onnx_path)).graph.node:
        found.setdefault(node.domain or "ai.onnx", set()).add(node.op_type)
    return {domain: sorted(ops) for domain, ops in sorted(found.items())}


def _check_quantised(data: bytes, float_onnx) -> None:
    import onnx

    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    if "QLinearConv" not in ops:
        raise ExportError(f"quantising {float_onnx} produced no QLinearConv: its convs stayed float "
                          f"(ops: {', '.join(sorted(ops))})")


def int8_bytes(onnx_path: str | os.PathLike) -> dict:
    """Bytes of an int8 file's constants by role: int8 weights (the quantised kernels, the
    fixed blur taps counted apart), int32 biases, float scales, zero points, other."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    role = {}
    for node in graph.node:
        if node.op_type == "QLinearConv":
            role[node.input[3]] = "int8_weight_bytes"
            if len(node.input) > 8:
                role[node.input[8]] = "int32_bias_bytes"
    out = dict.fromkeys(("int8_weight_bytes", "blur_tap_bytes", "int32_bias_bytes", "scale_bytes",
                         "zero_point_bytes", "other_bytes"), 0)
    for t in graph.initializer:
        size = numpy_helper.to_array(t).nbytes
        kind = role.get(t.name) or _constant_kind(t.name)
        if kind == "int8_weight_bytes" and not t.name.startswith(("features.", "head.")):
            # the exporter names parameters by module path; BlurPool's kernel, a buffer it folded
            # into a constant, is named after the op that made it ("expand")
            kind = "blur_tap_bytes"
        out[kind] += size
    out["int8_initializer_bytes"] = sum(numpy_helper.to_array(t).nbytes for t in graph.initializer
                                        if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))
    out["constant_bytes"] = sum(v for k, v in out.items() if k != "int8_initializer_bytes")
    return out


def _constant_kind(name: str) -> str:
    if name.endswith("_scale"):
        return "scale_bytes"
    if name.endswith("_zero_point"):
        return "zero_point_bytes"
    return "other_bytes"


# --- a whole export, as `tinycnn export` runs it ------------------------------------------

def resolve_model_path(model_or_run: str | os.PathLike) -> Path:
    """A model file, or a run directory holding one (``model.pt``)."""
    path = Path(model_or_run)
    if path.is_dir():
        if not (path / MODEL).is_file():
            raise ExportError(f"{path} is a directory without a {MODEL}; give a model file or a finished run directory")
        return path / MODEL
    if not path.exists():
        raise ExportError(f"no model file or run directory at {path}")
    return path


def draw_calibration(train: Split, n: int) -> torch.Tensor:
    """``n`` images of a training split, drawn by a fixed permutation (never the test set)."""
    if not 1 <= n <= len(train):
        raise ExportError(f"--calibration must be between 1 and {len(train):,} training images, got {n}")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(CALIBRATION_SEED))
    return train.x[perm[:n]]


def _check_formats(formats) -> tuple[str, ...]:
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format {', '.join(map(repr, unknown)) or '(none)'}; "
                          f"accepted: {', '.join(FORMATS)}")
    return formats


@contextlib.contextmanager
def _staging(out_dir: Path):
    """A hidden folder inside ``out_dir`` where every file is written before any is moved in.
    It is removed afterwards; if the export fails, so is every folder made for it."""
    made = next((p for p in [*reversed(out_dir.parents), out_dir] if not p.exists()), None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=".export-"))
    except OSError as e:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise ExportError(f"cannot write to the output directory {out_dir}: {e.strerror or e}") from e
    try:
        yield stage
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _file_record(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _float_files(model: nn.Module, stage: Path, data: Dataset, log) -> dict:
    check = data.test.subset(CHECK_IMAGES)
    fixed = export_onnx(model, stage / FLOAT_FILE, batch=1)
    dynamic = export_onnx(model, stage / DYNAMIC_FILE, batch=None)
    record = {"opset": OPSET, "input": INPUT, "output": OUTPUT,
              "files": {FLOAT_FILE: {"batch": 1, **_file_record(fixed)},
                        DYNAMIC_FILE: {"batch": "dynamic", **_file_record(dynamic)}},
              "check": {FLOAT_FILE: check_onnx(fixed, model, check.x),
                        DYNAMIC_FILE: check_onnx(dynamic, model, check.x)},
              "ops": ops_by_domain(fixed),
              "test_accuracy": onnx_accuracy(dynamic, data.test), "test_accuracy_of": DYNAMIC_FILE}
    log(f"float ONNX: max |logit diff| {record['check'][FLOAT_FILE]['max_abs_logit_diff']:.2e}, top-1 agreement "
        f"{record['check'][FLOAT_FILE]['top1_agreement']:.2%} on {len(check):,} test images; test accuracy "
        f"(onnxruntime, {len(data.test):,} images) {record['test_accuracy']:.2%}")
    return record


def _int8_file(model: nn.Module, stage: Path, data: Dataset, calibration: int, log) -> dict:
    images = draw_calibration(data.train, calibration)
    path = quantize_int8(stage / FLOAT_FILE, stage / INT8_FILE, images)
    constants = int8_bytes(path)
    record = {"files": {INT8_FILE: {"batch": 1, **_file_record(path)}},
              "quantisation": QUANTISATION, "int8_weight_bytes": constants["int8_weight_bytes"], "constants": constants,
              "calibration": {"images": len(images), "source": "train", "method": "MinMax",
                              "draw": f"randperm(official train set, seed {CALIBRATION_SEED})[:{len(images)}]"},
              "ops": ops_by_domain(path), "check": check_onnx(path, model, data.test.x[:CHECK_IMAGES]),
              "test_accuracy": onnx_accuracy(path, data.test), "test_accuracy_of": INT8_FILE}
    log(f"int8 ONNX: {record['int8_weight_bytes']:,} B of int8 weights, top-1 agreement with PyTorch "
        f"{record['check']['top1_agreement']:.2%} on {record['check']['images']:,} test images; test accuracy "
        f"(onnxruntime, {len(data.test):,} images) {record['test_accuracy']:.2%}")
    return record


def _c_files(stage: Path, data: Dataset, check_images: int | None, log, patch=None) -> dict:
    """model.c, model.h, model_golden.h and model_main.c from the staged int8 file, checked on
    the test set (or its first ``check_images``) against onnxruntime, bit for bit; ``patch``
    (True or rows per band) runs the first stage band by band."""
    test = data.test if check_images is None else data.test.subset(check_images)
    record = cgen.export_c(stage / INT8_FILE, stage, test.x, test.y, log=log, patch=patch)
    record["source"] = INT8_FILE
    record["files"] = {name: _file_record(stage / name) for name in cgen.C_FILES}
    return record


def _publish(stage: Path, out_dir: Path, names: list[str]) -> None:
    """Move the staged files in, the record last: an export.json always describes files that exist."""
    for name in names:
        os.replace(stage / name, out_dir / name)


def _measure(model: nn.Module, data: Dataset, stage: Path, formats: tuple[str, ...], calibration: int,
             c_check: int | None, log, c_patch=None) -> dict:
    record = {"float": _float_files(model, stage, data, log)}
    if "int8" in formats or "c" in formats:
        record["int8"] = _int8_file(model, stage, data, calibration, log)
    if "c" in formats:
        record["c"] = _c_files(stage, data, c_check, log, c_patch)
    return record


def _file_names(formats: tuple[str, ...]) -> list[str]:
    names = [FLOAT_FILE, DYNAMIC_FILE]
    if "int8" in formats or "c" in formats:
        names.append(INT8_FILE)
    if "c" in formats:
        names.extend(cgen.C_FILES)
    return names


def _versions(formats: tuple[str, ...]) -> dict:
    import onnx
    import onnxruntime
    import onnxscript

    versions = {**environment(), "onnx_version": onnx.__version__, "onnxruntime_version": onnxruntime.__version__,
                "onnxscript_version": onnxscript.__version__}
    if "c" in formats:
        versions["generator"] = f"{cgen.GENERATOR} {cgen.generator_version()}"
    return versions


def export_run(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               formats=("int8",), calibration: int = DEFAULT_CALIBRATION,
               data_dir: str | os.PathLike | None = None, log=lambda _: None, c_check: int | None = None,
               c_patch=None) -> dict:
    """Export a model file (or run directory) to ``out_dir`` (default: beside the model):
    model.onnx and model.dynamic.onnx, with ``int8`` also model.int8.onnx, with ``c`` also
    the C files (checked on the whole test set, or its first ``c_check`` images; ``c_patch``
    True or rows per band: the patch-based first stage), and
    export.json with every check. Each file is written in a staging folder first and moved
    in only when all of them are written and checked: a failure leaves ``out_dir`` as it was."""
    _require_runtime()
    formats = _check_formats(formats)
    if "c" in formats:  # before any work: a compiler must be there
        cgen.find_compiler()
    model_path = resolve_model_path(model_path)
    model = load_model(model_path)
    data = load_dataset(model.spec.dataset, data_dir)
    if ("int8" in formats or "c" in formats) and not 1 <= calibration <= len(data.train):
        raise ExportError(f"--calibration must be between 1 and {len(data.train):,} training images, "
                          f"got {calibration}")
    out, start = Path(out_dir) if out_dir is not None else model_path.parent, time.perf_counter()
    with _staging(out) as stage:
        record = {"model": portable(model_path), "out_dir": portable(out), "dataset": model.spec.dataset,
                  "arch": model.spec.arch, "params": sum(p.numel() for p in model.parameters()),
                  "formats": list(formats),
                  **_measure(model, data, stage, formats, calibration, c_check, log, c_patch)}
        record.update(seconds=round(time.perf_counter() - start, 1), exported_at=utc_now(),
                      versions=_versions(formats))
        write_json(stage / RECORD_FILE, record)
        _publish(stage, out, _file_names(formats) + [RECORD_FILE])
    return record
