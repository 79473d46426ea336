"""Golden per-epoch histories: short CPU runs that together touch every technique.

Recorded once with the engine as it stood at 5f472f2 (``tinycnn.train.train``), before the
engine was split into fit / epoch / step (issue #14); ``tests/test_golden.py`` checks that
the engine of today reproduces them exactly on the CPU. Re-record only when a change of
behaviour is intended, and say so in the commit:

    python tests/golden_cases.py   # rewrites tests/golden/histories.json
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parent / "golden" / "histories.json"

# name -> (dataset, phase, train/val/test images, recipe fields, teacher phase or None).
# sam_swa says sam_gradient="sum": the engine at 5f472f2 stepped SAM with g(w) + g(w + e)
# (found by #14); the field was added after recording, to name what these runs did.
CASES: dict[str, tuple] = {
    "sam_swa": ("mnist", "final", (512, 200, 200),
                dict(epochs=3, batch_size=64, sam_rho=0.05, sam_gradient="sum", swa=True, swa_start=0.5, swa_lr=0.02, seed=1), None),
    "ema_cosine_warmup": ("mnist", "final", (512, 200, 200),
                          dict(epochs=2, batch_size=64, ema_decay=0.9, schedule="cosine", warmup_epochs=1,
                               min_lr_ratio=0.05, seed=2), None),
    "kd": ("mnist", "final", (512, 200, 200),
           dict(epochs=2, batch_size=64, kd_alpha=0.5, kd_temperature=2.0, seed=3), "slim"),
    "mix_aug_ls_clr": ("mnist", "slim", (512, 200, 200),
                       dict(epochs=2, batch_size=64, crop_pad=2, cutout=6, mixup_alpha=0.2, cutmix_alpha=1.0,
                            mix_prob=0.8, label_smoothing=0.1, schedule="clr", clr_half_epochs=0.5,
                            min_lr_ratio=0.1, seed=4), None),
    "kornia_triangular2": ("mnist", "slim", (512, 200, 200),
                           dict(epochs=2, batch_size=64, aug_backend="kornia", crop_pad=2, cutout=6,
                                mixup_alpha=0.2, schedule="clr", clr_mode="triangular2", clr_half_epochs=0.25,
                                seed=5), None),
    "onecycle_channels_last_clip": ("mnist", "final", (512, 200, 200),
                                    dict(epochs=2, batch_size=64, channels_last=True, grad_clip=1.0,
                                         schedule="onecycle", seed=6), None),
    "adamw_step_bf16": ("mnist", "slim", (512, 200, 200),
                        dict(epochs=2, batch_size=64, optimizer="adamw", lr=0.003, schedule="step",
                             step_milestones=(0.5,), amp="bf16", no_bias_decay=False, seed=7), None),
    # Lookahead is not here: torch-optimizer's Lookahead cannot write a checkpoint with this
    # torch (no _optimizer_state_dict_pre_hooks), so the old engine could not run it at all.
    "radam_constant_warmup": ("mnist", "slim", (512, 200, 200),
                                 dict(epochs=2, batch_size=64, optimizer="radam", lr=0.003,
                                      schedule="constant", warmup_epochs=0.5, lr_scale_batch=128, seed=8), None),
    "cifar10_blur_crop_flip": ("cifar10", "blur", (256, 100, 100),
                               dict(epochs=1, batch_size=64, crop_pad=4, flip=True, cutout=8, seed=9), None),
}


def case_inputs(name: str, data_dir=None):
    """(spec, recipe, splits, teacher) of one case, built the same way for every engine."""
    from tinycnn import build, get_phase
    from tinycnn.data import Splits, load_splits
    from tinycnn.recipe import Recipe

    dataset, phase, (n_train, n_val, n_test), fields, teacher_phase = CASES[name]
    s = load_splits(dataset, 5000, data_dir)
    splits = Splits(s.info, s.train.subset(n_train), s.val.subset(n_val), s.test.subset(n_test))
    teacher = None
    if teacher_phase:
        torch.manual_seed(1234)  # a fixed random teacher: distillation's arithmetic, not its benefit
        teacher = build(get_phase(dataset, teacher_phase)).eval()
    return get_phase(dataset, phase), Recipe(**fields), splits, teacher


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo): kernels, and so rounding, differ between models."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, in state_dict order, as float32 bytes."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def comparable(history: list[dict]) -> list[dict]:
    """A history without its timings, which differ run to run."""
    return [{k: v for k, v in rec.items() if "time" not in k and k != "images_per_s"} for rec in history]


def _record_with_train(name: str, tmp: Path) -> dict:
    from tinycnn import load_model
    from tinycnn.train import train

    spec, recipe, splits, teacher = case_inputs(name)
    m = train(spec, recipe, tmp / name, splits=splits, device="cpu", teacher=teacher, quiet=True)
    return {"history": comparable(m["history"]), "final_weights": m["final_weights"],
            "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "weights_sha256": weights_digest(load_model(tmp / name / "model.pt"))}


def record() -> None:
    import tempfile

    torch.set_num_threads(1)
    out = {"recorded_with": "tinycnn.train.train at 5f472f2, CPU, one thread",
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model(), "torch": torch.__version__, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            out["cases"][name] = _record_with_train(name, Path(tmp))
            print(name, out["cases"][name]["history"][-1], flush=True)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(GOLDEN.parents[2]))
    os.environ.setdefault("TINYCNN_DATA", str(GOLDEN.parents[3] / "shared" / "data"))
    record()
