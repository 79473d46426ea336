"""Speed of the corruption benchmark (issue #18, item 1), beside what a user would otherwise run.

    python experiments/bench_robust.py [--threads 2] [--peer-python PATH] [--out experiments/results/robust-speed-cpu.json]

Three measurements, on the committed finals:

1. Generation alone, per CIFAR-10-C family at severity 3: images/s of ours (batched torch,
   1,000 images per call) and of the `imagecorruptions` package (per-image numpy/scipy/
   skimage, ImageNet-C constants; the usual way to make -C sets), run with ``--peer-python``
   (its own virtual environment) on 100 images. Skipped with a note when it is not given.
2. The whole `tinycnn robust` pass: ours vs the same code with the settings a first version
   (and a user's plain loop) uses: 1,000-image batches, NCHW. MNIST on the full test set,
   CIFAR-10 on a seeded 1,000-image sample (`--n 1000`: 75,000 images through the net).
3. The full CIFAR-10 benchmark (15 x 5 x 10,000 images): quoted from the final's committed
   robust.json, which records its own seconds.

The machine is shared: read the ratios.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinycnn import robust  # noqa: E402
from tinycnn.atomic import atomic_write_text  # noqa: E402
from tinycnn.batches import to_float  # noqa: E402
from tinycnn.checkpoint import load_model  # noqa: E402
from tinycnn.corruptions import CIFAR10_C  # noqa: E402
from tinycnn.data import load_dataset  # noqa: E402
from tinycnn.provenance import environment, utc_now  # noqa: E402

FINALS = {"mnist": ROOT / "experiments/results/mnist/sam/seed0",
          "cifar10": ROOT / "experiments/results/cifar10/long/seed0"}
SAMPLE = {"mnist": 0, "cifar10": 1000}
PEER = """
import json, sys, time, numpy as np
from imagecorruptions import corrupt, get_corruption_names
x = np.load(sys.argv[1])
out = {}
for name in get_corruption_names():
    t = time.perf_counter()
    for img in x:
        corrupt(img, corruption_name=name, severity=3)
    out[name] = len(x) / (time.perf_counter() - t)
print(json.dumps(out))
"""


def ours_generation(images: torch.Tensor) -> dict:
    x = to_float(images)
    rates = {}
    for name, family in CIFAR10_C.items():
        g = robust._generator(0, name, 3, x.device)
        t = time.perf_counter()
        family(x, 3, g)
        rates[name] = len(x) / (time.perf_counter() - t)
    return rates


def peer_generation(python: str | None, images: torch.Tensor) -> dict:
    if not python:
        return {"skipped": "no --peer-python given (a virtual environment with `pip install imagecorruptions`)"}
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        np.save(path, images.permute(0, 2, 3, 1).numpy())
        r = subprocess.run([python, "-c", PEER, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"skipped": f"imagecorruptions failed: {r.stderr.strip().splitlines()[-1:]}"}
    return json.loads(r.stdout)


def benchmark_pass(dataset: str, old_style: bool) -> dict:
    model = load_model(FINALS[dataset] / "model.pt")
    split = robust.subset(load_dataset(dataset).test, SAMPLE[dataset])
    if old_style:
        r = robust.robustness(model, dataset, split, channels_last=False, eval_batch=robust.GENERATE)
    else:
        r = robust.robustness(model, dataset, split)
    return {"images": r["n"], "seconds": r["seconds"], "mean": r["mean"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer-python", default=None, help="python of a venv with imagecorruptions installed")
    p.add_argument("--out", default=str(ROOT / "experiments/results/robust-speed-cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cifar = load_dataset("cifar10").test.x
    result = {"when": utc_now(), "environment": environment(), "threads": args.threads,
              "generation_img_per_s": {"ours (1,000 per call)": ours_generation(cifar[:1000]),
                                       "imagecorruptions (per image, 100)": peer_generation(
                                           args.peer_python, cifar[:100])}}
    for dataset in FINALS:
        result[f"pass_{dataset}"] = {"ours": benchmark_pass(dataset, False),
                                     "1,000-image batches, NCHW": benchmark_pass(dataset, True)}
    full = FINALS["cifar10"] / "robust.json"
    if full.is_file():
        record = json.loads(full.read_text())
        result["full_cifar10"] = {"images_through_net": record["n"] * 75, "seconds": record["seconds"],
                                  "threads": record.get("threads")}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
