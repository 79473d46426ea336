"""C source for microcontrollers from a run's int8 ONNX file (issues 17 item 5, 22 items 1-3),
checked bit for bit against onnxruntime and measured (flash, arena, stack, library calls).

The path, one step per function:

1. `c_graph`: model.int8.onnx as the C writer gets it. The file takes float [0, 1] images
   and ends in DequantizeLinear; the C graph takes the **uint8 pixels** a sensor or the
   dataset gives (a Cast and a Div by 255 put in front: the same IEEE division `to_float`
   does) and returns the **int8 logits** (the final DequantizeLinear dropped: float logits
   are ``(q - zero_point) * scale``, the same argmax). Every tensor's shape is written into
   ``value_info`` (measured by onnxruntime, all intermediate outputs exposed): ONNX shape
   inference does not know com.microsoft ops.
2. `generate_c`: `cwriter` writes model.c: every intermediate at a planned offset of one
   static arena (`arena`: lifetimes, greedy by size, in place where the op allows), weights
   ``static const``, no heap, no recursion, no libm; its arithmetic is onnxruntime's, op by
   op (see cwriter's docstring). model.h is written here, from the generated prototype.
3. `write_golden` / `HARNESS`: a few test images and onnxruntime's int8 logits as C arrays
   (model_golden.h), and model_main.c, which runs them (no arguments) or maps a file of raw
   images to a file of int8 logits (two arguments), the mode the full-test-set check uses.
4. `check_c` and `measure_object`: the system C compiler builds the harness
   (``-std=c99 -O2 -Wall -Wextra -Werror``; ``-ffast-math`` would break exactness), its int8
   logits are compared with onnxruntime's bit for bit; ``-Os -c`` gives the object's text +
   data (flash) and, with ``-fstack-usage``/``-fcallgraph-info``, the stack of ``model()``'s
   deepest call chain, and its undefined symbols (library calls). Where ``arm-none-eabi-gcc``
   is on PATH the same object is built for a Cortex-M4F (``-mcpu=cortex-m4 -mthumb
   -mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os``), the flash and stack of a real target.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import cwriter
from .atomic import atomic_write_text
from .batches import to_float
from .errors import ExportError

C_FILE, H_FILE, GOLDEN_FILE, MAIN_FILE = "model.c", "model.h", "model_golden.h", "model_main.c"
C_FILES = (C_FILE, H_FILE, GOLDEN_FILE, MAIN_FILE)
FUNCTION, PIXELS, LOGITS = "model", "pixels", "logits"
GOLDEN_IMAGES = 10  # test images in the model_golden.h that ships
GENERATOR = "tinycnn"
WARNINGS = ("-Wall", "-Wextra", "-Werror")
BUILD_FLAGS = ("-std=c99", "-O2", *WARNINGS)
OBJECT_FLAGS = ("-std=c99", "-Os", "-c", *WARNINGS, "-pedantic")
ARM_COMPILER = "arm-none-eabi-gcc"
ARM_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
STACK_FLAGS = ("-fstack-usage", "-fcallgraph-info=su")
HEAP_CALL = re.compile(r"\b(malloc|calloc|realloc|free|alloca)\s*\(")
LIBM = {f"{name}{suffix}" for name in ("exp", "log", "pow", "sqrt", "tanh", "nearbyint", "rint", "lrint", "round",
                                       "floor", "ceil", "fmin", "fmax", "fabs") for suffix in ("", "f")}


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def generator_version() -> str:
    """The generator of model.c: tinycnn itself (`cwriter`), at this package's version."""
    from . import __version__

    return __version__


def find_compiler(compiler: str | None = None) -> str:
    """The system C compiler: ``compiler`` if given, else ``cc``, else ``gcc`` on PATH."""
    found = shutil.which(compiler) if compiler else (shutil.which("cc") or shutil.which("gcc"))
    if not found:
        wanted = repr(compiler) if compiler else "cc or gcc"
        raise ExportError(f"no C compiler ({wanted}) found on PATH: the C export compiles the generated code "
                          f"to check it against onnxruntime; install one (e.g. apt-get install gcc)")
    return found


# --- 1. the graph the generator gets --------------------------------------------------------

def _int8_logits_node(proto, source) -> tuple[str, list[int]]:
    """The int8 tensor the file's final DequantizeLinear reads, and the fixed input shape."""
    import onnx

    graph = proto.graph
    why = None
    if len(graph.input) != 1 or len(graph.output) != 1:
        why = "it needs one input and one output"
    elif graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        why = "its input is not a float image"
    elif not any(n.op_type == "QLinearConv" for n in graph.node):
        why = "it has no QLinearConv (a float file?)"
    last = next((n for n in graph.node if graph.output[0].name in n.output), None) if not why else None
    if not why and (last is None or last.op_type != "DequantizeLinear"):
        why = "its output is not made by a final DequantizeLinear"
    dims = [] if why else list(graph.input[0].type.tensor_type.shape.dim)
    shape = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    if not why and (len(shape) != 4 or shape[0] != 1 or 0 in shape):
        why = f"its input shape is not a fixed 1 x C x H x W ({shape})"
    if why:
        raise ExportError(f"{source} is not an int8 QOperator file with batch 1 as `tinycnn export --format int8` "
                          f"writes it ({why}); C is generated from model.int8.onnx")
    return last.input[0], shape


def _load(int8_onnx):
    import onnx

    try:
        return onnx.load(str(int8_onnx))
    except Exception as e:  # protobuf's DecodeError, OSError: the file is not an ONNX model
        raise ExportError(f"cannot read {int8_onnx} as an ONNX file: {_first_line(e)}") from e


def c_graph(int8_onnx):
    """The ModelProto C is generated from: uint8 ``pixels`` [1, C, H, W] in, int8 ``logits`` out,
    every intermediate tensor's shape in ``value_info`` (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = _load(int8_onnx)
    quantised, shape = _int8_logits_node(proto, int8_onnx)
    graph, image = proto.graph, proto.graph.input[0].name
    graph.node.remove(next(n for n in graph.node if n.op_type == "DequantizeLinear" and quantised in n.input))
    for node in graph.node:
        node.output[:] = [LOGITS if name == quantised else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(255, np.float32), "pixel_range"))
    graph.node.insert(0, helper.make_node("Div", ["pixels_float", "pixel_range"], [image], name="pixels_to_unit"))
    graph.node.insert(0, helper.make_node("Cast", [PIXELS], ["pixels_float"], to=onnx.TensorProto.FLOAT,
                                          name="pixels_cast"))
    classes = _write_shapes(proto, shape)
    del graph.input[:], graph.output[:]
    graph.input.append(helper.make_tensor_value_info(PIXELS, onnx.TensorProto.UINT8, shape))
    graph.output.append(helper.make_tensor_value_info(LOGITS, onnx.TensorProto.INT8, [1, classes]))
    return proto


def _write_shapes(proto, shape: list[int]) -> int:
    """Write the shape and type of every node output into value_info, as onnxruntime computes
    them on one all-zero image; return the number of classes (the width of ``logits``)."""
    import onnx
    from onnx import helper

    graph = proto.graph
    names = [o for node in graph.node for o in node.output if o]
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:], probe.graph.input[:], probe.graph.output[:]
    probe.graph.input.append(helper.make_tensor_value_info(PIXELS, onnx.TensorProto.UINT8, shape))
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    arrays = _session(probe.SerializeToString()).run(names, {PIXELS: np.zeros(shape, np.uint8)})
    del graph.value_info[:]
    for name, array in zip(names, arrays):
        if name != LOGITS:
            graph.value_info.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape))
    logits = arrays[names.index(LOGITS)]
    if logits.dtype != np.int8 or logits.ndim != 2 or logits.shape[0] != 1:
        raise ExportError(f"the int8 logits have type {logits.dtype} and shape {list(logits.shape)}; "
                          f"the C export needs int8 [1, classes]")
    return int(logits.shape[1])


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own Fail/InvalidGraph types
        raise ExportError(f"onnxruntime cannot load the int8 graph for C: {_first_line(e)}") from e


# --- the reference: onnxruntime on the int8 file itself ------------------------------------------

def reference_logits(int8_onnx, images: torch.Tensor) -> np.ndarray:
    """onnxruntime's int8 logits of uint8 NCHW ``images`` on the int8 file as it ships (its
    final DequantizeLinear's input exposed as a second output), one image per call."""
    import onnx
    from onnx import helper

    proto = _load(int8_onnx)
    quantised, _ = _int8_logits_node(proto, int8_onnx)
    proto.graph.output.append(helper.make_tensor_value_info(quantised, onnx.TensorProto.INT8, None))
    session = _session(proto.SerializeToString())
    name = session.get_inputs()[0].name
    out = [session.run([quantised], {name: to_float(images[i:i + 1]).numpy()})[0] for i in range(len(images))]
    return np.concatenate(out).reshape(len(images), -1) if out else np.zeros((0, 0), np.int8)


def logit_quantisation(int8_onnx) -> tuple[float, int]:
    """Scale and zero point of the int8 logits: float logits = (q - zero_point) * scale."""
    from onnx import numpy_helper

    proto = _load(int8_onnx)
    quantised, _ = _int8_logits_node(proto, int8_onnx)
    node = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == quantised)
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    scale, zero = (constants.get(name) for name in node.input[1:3])
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        raise ExportError("the int8 logits need one constant scale and zero point to be described in model.h")
    return float(scale.reshape(())), int(zero.reshape(()))


# --- 2. generating model.c and model.h -----------------------------------------------------------

def generate_c(graph, patch=None) -> tuple[str, dict]:
    """model.c's text for the C graph, and its memory plan (`cwriter.write_model_c`; ``patch``:
    True or rows per band for the patch-based first stage, None for none)."""
    text, memory = cwriter.write_model_c(graph, patch=patch)
    heap = sorted(set(HEAP_CALL.findall(text)))
    if heap:  # a guard on the writer itself: it never emits these
        raise ExportError(f"the generated C calls {', '.join(heap)}")
    return text, memory


def prototype(c_text: str) -> str:
    """The generated entry point's declaration, ``restrict`` dropped (C99 ignores it there)."""
    match = re.search(rf"^void {FUNCTION}\((const uint8_t {PIXELS}\[[^)]*\], int8_t {LOGITS}\[[^)]*\])\) \{{$",
                      c_text, re.MULTILINE)
    if match is None:
        raise ExportError(f"the generated C has no `void {FUNCTION}(const uint8_t {PIXELS}[...], "
                          f"int8_t {LOGITS}[...])` entry point")
    return f"void {FUNCTION}({match.group(1).replace('restrict ', '')});"


def header(c_text: str, shape: list[int], classes: int, scale: float, zero_point: int, version: str) -> str:
    """model.h: the entry point, the shapes as macros, and how to read the int8 logits."""
    _, channels, height, width = shape
    return f"""/* tinycnn int8 model, generated by {GENERATOR} {version} (tinycnn.cwriter) from model.int8.onnx
 * (tinycnn export --format c).
 * Input: uint8 pixels as the dataset stores them (N C H W order, batch 1); the model divides by 255 and
 * normalises itself. Output: int8 logits, bit-exact with onnxruntime on model.int8.onnx; the float logits
 * are (logits[0][k] - MODEL_LOGIT_ZERO_POINT) * MODEL_LOGIT_SCALE, the class is the argmax of either.
 * Memory: one static arena inside model.c holds every intermediate tensor at a planned offset; no heap,
 * no recursion, no libm (compile without -ffast-math and without FMA contraction: -std=c99 keeps it off).
 * model() is not reentrant: the arena is shared by all calls. */
#ifndef TINYCNN_MODEL_H
#define TINYCNN_MODEL_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif
#define MODEL_CHANNELS {channels}
#define MODEL_HEIGHT {height}
#define MODEL_WIDTH {width}
#define MODEL_PIXELS {channels * height * width}
#define MODEL_CLASSES {classes}
#define MODEL_LOGIT_SCALE {scale:.9g}f
#define MODEL_LOGIT_ZERO_POINT ({zero_point})
{prototype(c_text)}
#ifdef __cplusplus
}}
#endif
#endif
"""


# --- 3. golden vectors and the harness ---------------------------------------------------------

def _c_rows(array: np.ndarray, per_line: int) -> str:
    rows = []
    for item in array.reshape(len(array), -1):
        values = [str(int(v)) for v in item]
        lines = (", ".join(values[i:i + per_line]) for i in range(0, len(values), per_line))
        rows.append("    {\n        " + ",\n        ".join(lines) + "\n    }")
    return ",\n".join(rows)


def write_golden(path, images: torch.Tensor, logits: np.ndarray) -> None:
    """model_golden.h: ``images`` (uint8, flat per image) and onnxruntime's int8 ``logits``."""
    if len(images) == 0 or len(images) != len(logits):
        raise ExportError(f"golden vectors need images and logits of the same positive count "
                          f"({len(images)} and {len(logits)})")
    pixels = images.numpy().astype(np.uint8)
    atomic_write_text(path, f"""/* Golden vectors: {len(pixels)} test images (uint8) and onnxruntime's int8 logits on
 * model.int8.onnx. model_main.c runs them and compares bit for bit. */
#define MODEL_GOLDEN_COUNT {len(pixels)}
static const uint8_t model_golden_pixels[MODEL_GOLDEN_COUNT][MODEL_PIXELS] = {{
{_c_rows(pixels, 28)}
}};
static const int8_t model_golden_logits[MODEL_GOLDEN_COUNT][MODEL_CLASSES] = {{
{_c_rows(logits.astype(np.int8), 16)}
}};
""")


HARNESS = r"""/* Test harness for model.c (tinycnn export --format c). Build: cc -std=c99 -O2 model.c model_main.c
 *   ./a.out                  runs the golden vectors of model_golden.h, exit 0 when all are bit-exact
 *   ./a.out IMAGES LOGITS    reads raw uint8 images (MODEL_PIXELS bytes each), writes int8 logits */
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "model_golden.h"

static uint8_t pixels[1][MODEL_CHANNELS][MODEL_HEIGHT][MODEL_WIDTH];
static int8_t logits[1][MODEL_CLASSES];

static int run_golden(void) {
    int exact = 0;
    for (int i = 0; i < MODEL_GOLDEN_COUNT; ++i) {
        memcpy(pixels, model_golden_pixels[i], sizeof pixels);
        model(pixels, logits);
        if (memcmp(logits, model_golden_logits[i], sizeof logits) == 0) {
            ++exact;
        } else {
            printf("golden image %d differs\n", i);
        }
    }
    printf("golden: %d/%d bit-exact\n", exact, MODEL_GOLDEN_COUNT);
    return exact == MODEL_GOLDEN_COUNT ? 0 : 1;
}

static int run_files(const char *in_path, const char *out_path) {
    FILE *in = fopen(in_path, "rb");
    FILE *out = fopen(out_path, "wb");
    long count = 0;
    if (in == NULL || out == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", in_path, out_path);
        return 2;
    }
    while (fread(pixels, 1, sizeof pixels, in) == sizeof pixels) {
        model(pixels, logits);
        if (fwrite(logits, 1, sizeof logits, out) != sizeof logits) {
            fprintf(stderr, "cannot write %s\n", out_path);
            return 2;
        }
        ++count;
    }
    fclose(in);
    if (fclose(out) != 0) {
        return 2;
    }
    printf("%ld images\n", count);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 1) {
        return run_golden();
    }
    if (argc == 3) {
        return run_files(argv[1], argv[2]);
    }
    fprintf(stderr, "usage: %s [IMAGES LOGITS]\n", argv[0]);
    return 2;
}
"""


def write_c(int8_onnx, out_dir, images: torch.Tensor, logits: np.ndarray, patch=None) -> dict:
    """model.c, model.h, model_golden.h (``images`` and their onnxruntime int8 ``logits``) and
    model_main.c in ``out_dir``; returns what the record says about them (with ``patch``, the
    patch-based first stage's, see `cwriter.write_model_c`)."""
    version = generator_version()
    graph = c_graph(int8_onnx)
    shape = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    classes = graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    scale, zero_point = logit_quantisation(int8_onnx)
    text, memory = generate_c(graph, patch)
    out = Path(out_dir)
    atomic_write_text(out / C_FILE, text)
    atomic_write_text(out / H_FILE, header(text, shape, classes, scale, zero_point, version))
    write_golden(out / GOLDEN_FILE, images, logits)
    atomic_write_text(out / MAIN_FILE, HARNESS)
    return {"generator": f"{GENERATOR} {version}",
            "memory": {k: memory[k] for k in ("arena_bytes", "lower_bound_bytes", "lower_bound_of", "plan")},
            "macs": memory["macs"], "kernels": memory["kernels"],
            "api": prototype(text), "input": "uint8 pixels [1, C, H, W] as stored; /255 and normalisation inside",
            "output": "int8 logits (model.int8.onnx's final DequantizeLinear input)",
            "logit_scale": scale, "logit_zero_point": zero_point,
            "golden": {"file": GOLDEN_FILE, "images": len(images), "of": f"the first {len(images)} test images"},
            **({"patch": memory["patch"]} if "patch" in memory else {})}  # only with --patch / --patch-rows


# --- 4. building, checking and measuring -----------------------------------------------------------

def _compile(cmd: list[str], cwd: Path, what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    if r.returncode != 0:
        errors = [line for line in r.stderr.splitlines() if "error" in line] or r.stderr.splitlines()
        raise ExportError(f"{Path(cmd[0]).name} could not build {what}: "
                          f"{errors[0].strip()[:300] if errors else f'exit status {r.returncode}'}")


def build_harness(c_dir, build: Path, compiler: str | None = None) -> Path:
    """Compile model.c and model_main.c from ``c_dir`` into an executable in ``build``."""
    cc, c_dir = find_compiler(compiler), Path(c_dir).resolve()
    exe = Path(build).resolve() / "model_test"
    _compile([cc, *BUILD_FLAGS, str(c_dir / C_FILE), str(c_dir / MAIN_FILE), "-o", str(exe)], c_dir,
             "the generated C")
    return exe


def run_golden(exe: Path) -> tuple[int, int]:
    """(bit-exact, total) golden vectors, as the harness reports them."""
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    match = re.search(r"golden: (\d+)/(\d+) bit-exact", r.stdout)
    if match is None or r.returncode not in (0, 1):
        raise ExportError(f"the C harness failed on its golden vectors (exit status {r.returncode}): "
                          f"{_first_line(r.stderr or r.stdout)}")
    return int(match.group(1)), int(match.group(2))


def run_c(exe: Path, images: torch.Tensor, build: Path) -> np.ndarray:
    """int8 logits of uint8 NCHW ``images`` from the compiled harness, one row per image."""
    pixels, logits = Path(build) / "images.u8", Path(build) / "logits.i8"
    np.ascontiguousarray(images.numpy().astype(np.uint8)).tofile(pixels)
    r = subprocess.run([str(exe), str(pixels), str(logits)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ExportError(f"the C harness failed (exit status {r.returncode}): {_first_line(r.stderr or r.stdout)}")
    return np.fromfile(logits, np.int8).reshape(len(images), -1)


def check_c(c_dir, images: torch.Tensor, labels: torch.Tensor, reference: np.ndarray,
            compiler: str | None = None) -> dict:
    """Build the harness with the system compiler, run it on its golden vectors and on
    ``images``, and compare its int8 logits with onnxruntime's ``reference`` bit for bit."""
    cc = find_compiler(compiler)
    with tempfile.TemporaryDirectory(prefix="tinycnn-cbuild-") as tmp:
        exe = build_harness(c_dir, Path(tmp), cc)
        golden = run_golden(exe)
        got = run_c(exe, images, Path(tmp))
    exact = (got == reference).all(axis=1)
    return {"images": len(images), "bit_exact": int(exact.sum()), "golden_bit_exact": golden[0],
            "golden_images": golden[1], "compared": "int8 logits, bit for bit, against onnxruntime on model.int8.onnx",
            "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean()),
            "test_accuracy": float((got.argmax(1) == labels.numpy()).mean()),
            "compiler": _compiler_version(cc), "flags": " ".join(BUILD_FLAGS)}


def _compiler_version(cc: str) -> str:
    r = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    return f"{Path(cc).name}: {_first_line(r.stdout) if r.returncode == 0 else 'version unknown'}"


def measure_object(c_file, compiler: str | None = None, target: tuple[str, ...] = ()) -> dict:
    """``cc -std=c99 -Os -c -Wall -Wextra -Werror -pedantic model.c`` (with ``target``'s flags):
    text, data and bss from ``size`` (flash = text + data, the weights being const and rodata
    counted in text), the stack of the entry point's deepest call chain from the compiler's
    stack-usage files, and the object's undefined symbols (library calls)."""
    cc, c_file = find_compiler(compiler), Path(c_file).resolve()
    with tempfile.TemporaryDirectory(prefix="tinycnn-cobj-") as tmp:
        obj = Path(tmp) / "model.o"
        flags = [*OBJECT_FLAGS, *target]
        for extra in (STACK_FLAGS, STACK_FLAGS[:1], ()):
            r = subprocess.run([cc, *flags, *extra, str(c_file), "-o", str(obj)], capture_output=True, text=True,
                               check=False, cwd=tmp)
            if r.returncode == 0:
                break
        else:
            raise ExportError(f"{Path(cc).name} could not compile {c_file.name} with {' '.join(flags)}: "
                              f"{_first_line(r.stderr)}")
        record = {"compiler": _compiler_version(cc), "flags": " ".join([*flags, *extra]), **_sizes(obj, cc)}
        record.update(_stack(Path(tmp)), external_calls=_undefined(obj, cc))
    record["heap"] = bool({"malloc", "calloc", "realloc", "free"} & set(record["external_calls"]))
    record["libm_calls"] = [name for name in record["external_calls"] if name in LIBM]
    return record


def measure_targets(c_file, compiler: str | None = None) -> dict:
    """The host object, and a Cortex-M4F object where arm-none-eabi-gcc is on PATH; "flash_of"
    says which of them the flash and stack figures of the record come from."""
    record = {"object": measure_object(c_file, compiler)}
    arm = shutil.which(ARM_COMPILER)
    record["cortex_m4"] = measure_object(c_file, arm, ARM_FLAGS) if arm else None
    record["flash_of"] = "cortex_m4" if arm else "object (host: no arm-none-eabi-gcc on PATH)"
    return record


def _tool(name: str, cc: str) -> str | None:
    """binutils' ``name`` beside a cross compiler (arm-none-eabi-size), else the host's."""
    base = Path(cc).name
    prefix = base[:-len("gcc")] if base.endswith("gcc") else ""
    return (shutil.which(prefix + name) if prefix else None) or shutil.which(name)


def _sizes(obj: Path, cc: str) -> dict:
    tool = _tool("size", cc)
    if tool is None:
        return {"text": None, "data": None, "bss": None, "flash_bytes": None}
    r = subprocess.run([tool, str(obj)], capture_output=True, text=True, check=False)
    fields = r.stdout.splitlines()[1].split() if r.returncode == 0 and len(r.stdout.splitlines()) > 1 else []
    if len(fields) < 3:
        return {"text": None, "data": None, "bss": None, "flash_bytes": None}
    text, data, bss = (int(v) for v in fields[:3])
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data}


def _undefined(obj: Path, cc: str) -> list[str]:
    tool = _tool("nm", cc)
    if tool is None:
        return []
    r = subprocess.run([tool, "-u", str(obj)], capture_output=True, text=True, check=False)
    return sorted({line.split()[-1] for line in r.stdout.splitlines() if line.strip()})


def _stack(tmp: Path) -> dict:
    """Stack bytes of ``model()`` plus its deepest callee chain inside model.c (from the call
    graph of ``-fcallgraph-info=su``; without it, the sum of every frame, an upper bound).
    Frames of library functions (libm) are not known and not counted."""
    ci, su = tmp / "model.ci", tmp / "model.su"
    if ci.is_file():
        frames, calls = {}, {}
        for line in ci.read_text().splitlines():
            node = re.match(r'node: \{ title: "([^"]+)".*?(\d+) bytes \((\w+)', line)
            edge = re.match(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', line)
            if node:
                frames[node.group(1)] = int(node.group(2))
            elif edge:
                calls.setdefault(edge.group(1), set()).add(edge.group(2))
        depth = _deepest(FUNCTION, frames, calls, ())
        return {"stack_bytes": depth, "stack_of": f"{FUNCTION}() and its deepest call chain in {C_FILE} "
                                                  f"(-fcallgraph-info=su); library frames not counted"}
    if su.is_file():
        frames = [int(line.split("\t")[1]) for line in su.read_text().splitlines() if "\t" in line]
        return {"stack_bytes": sum(frames), "stack_of": f"sum of every frame in {C_FILE} (-fstack-usage), "
                                                        f"an upper bound; library frames not counted"}
    return {"stack_bytes": None, "stack_of": "the compiler reports no stack usage"}


def _deepest(name: str, frames: dict, calls: dict, path: tuple) -> int | None:
    if name in path:
        return None  # recursion: no bound
    below = [_deepest(callee, frames, calls, (*path, name)) for callee in calls.get(name, ())]
    if None in below:
        return None
    return frames.get(name, 0) + max(below, default=0)


def export_c(int8_onnx, out_dir, images: torch.Tensor, labels: torch.Tensor, golden: int = GOLDEN_IMAGES,
             compiler: str | None = None, log=lambda _: None, patch=None) -> dict:
    """The C files of an int8 file in ``out_dir``, checked on ``images`` (uint8, with their
    ``labels``) against onnxruntime and measured; the first ``golden`` images become the
    golden vectors. Returns the "c" part of export.json."""
    cc = find_compiler(compiler)
    reference = reference_logits(int8_onnx, images)
    record = write_c(int8_onnx, out_dir, images[:golden], reference[:golden], patch)
    record["check"] = check_c(out_dir, images, labels, reference, cc)
    record.update(measure_targets(Path(out_dir) / C_FILE, cc))
    check, memory = record["check"], record["memory"]
    obj = record["cortex_m4"] or record["object"]
    where = "Cortex-M4F" if record["cortex_m4"] else "host"
    log(f"C ({record['generator']}): {check['bit_exact']:,}/{check['images']:,} test images "
        f"bit-exact with onnxruntime (int8 logits), accuracy {check['test_accuracy']:.2%}; arena "
        f"{memory['arena_bytes']:,} B (lower bound {memory['lower_bound_bytes']:,} B); {where} object (-Os) "
        f"{obj['flash_bytes'] or 0:,} B text+data, stack {obj['stack_bytes'] or 0:,} B, "
        f"{'heap' if obj['heap'] else 'no heap'}, calls {', '.join(obj['external_calls']) or 'nothing'}")
    if patch is not None:
        log(_patch_line(record["patch"]))
    return record


def _patch_line(patched: dict) -> str:
    if not patched["applied"]:
        return f"patch-based first stage not applied ({patched['reason']}): every op runs whole"
    return (f"patch-based first stage ({len(patched['stage'])} ops): {patched['bands']} bands of "
            f"{patched['band_rows']} output rows; arena {patched['arena_bytes_untiled']:,} B untiled -> "
            f"{patched['arena_bytes']:,} B; {patched['extra_macs']:,} extra MACs recomputing halo rows "
            f"(+{patched['extra_macs_fraction']:.1%} of {patched['macs_untiled']:,})")
