"""What data parallelism over CPU processes would buy the MNIST final, measured before
building it into the engine.

A second *thread* does nothing for a net this small (bench_train.py: same images/s with
one or two), because each op's work is too small to split. A second *process* could take
half of every batch instead; the cost is one gradient all-reduce (gloo) per step and the
per-image efficiency lost by halving the batch each process sees. This measures exactly
that: the MNIST final's forward + backward + SGD step on a fixed batch (no data loading or
augmentation, which bench_train.py shows are not the bottleneck), one thread per process,
1 vs N processes at the same global batch. Results go to
experiments/results/parallel-<device>.json.

    python experiments/bench_data_parallel.py [--procs 2] [--steps 100]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tinycnn import build, ladder

RESULTS = Path(__file__).resolve().parent / "results"


def _worker(rank: int, world: int, batch: int, steps: int, init_file: str, out) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build(ladder("mnist")[-1]).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    params = list(model.parameters())
    x = torch.randn(batch // world, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch // world,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if world > 1:  # one all-reduce of all gradients, flattened
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            dist.all_reduce(flat)
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p) / world)
                offset += p.numel()
        opt.step()

    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if rank == 0:
        out.put(steps * batch / (time.perf_counter() - t))
    if world > 1:
        dist.destroy_process_group()


def images_per_s(world: int, batch: int, steps: int) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_worker, args=(r, world, batch, steps, os.path.join(tmp, "init"), out))
                 for r in range(world)]
        for p in procs:
            p.start()
        result = out.get()
        for p in procs:
            p.join()
    return round(result, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = {}
    for batch in (64, 128):
        rows[f"batch {batch}"] = {f"{w} proc": images_per_s(w, batch, args.steps) for w in (1, args.procs)}
        print(batch, rows[f"batch {batch}"], flush=True)
    report = {"device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
              "torch": torch.__version__, "phase": f"mnist/{ladder('mnist')[-1].name}",
              "threads_per_process": 1, "steps": args.steps, "images_per_s": rows}
    out = Path(args.out) if args.out else RESULTS / "parallel-cpu.json"
    out.write_text(json.dumps(report, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
