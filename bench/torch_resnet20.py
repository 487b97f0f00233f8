"""A ResNet-20 training step in PyTorch on the CPU, the reference for `cargo bench --bench
cpu_compare -- resnet20`: batch 128 of random 3x32x32 images, cross-entropy, SGD momentum 0.9 with
weight decay 5e-4, lr 0.01, the loss and the correct count read back each step (as kiln's
train_step). Median wall time of 5 steps after 2 warm-up steps, then this process's peak resident
memory, printed as `workload<TAB>value<TAB>runs`.

`--profile`: instead, torch.profiler's table of one step's operators (self CPU time), to see
where PyTorch's time goes. Run through bench/cpu_compare.sh, which pins threads, or directly:
    THREADS=2 ~/.cache/kiln/torch-venv/bin/python bench/torch_resnet20.py [--profile]
"""

import os
import resource
import statistics
import sys
import time

import torch
from torch import nn

# kiln's `resnet20` (src/nn/models/resnet20.rs), defined once for the benchmarks in bench/torch_gpu.py
# (this script's directory is on the import path when it runs).
from torch_gpu import resnet20

BATCH, WARMUP, RUNS = 128, 2, 5


def main():
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    print(f"# torch {torch.__version__} cpu, {torch.get_num_threads()} threads")
    model = resnet20(torch, nn).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.tensor([(i * 7919 + 13) % 10 for i in range(BATCH)])

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        loss.item()
        (logits.argmax(1) == y).sum().item()

    if "--profile" in sys.argv:
        for _ in range(WARMUP):
            step()
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    print(f"resnet20 train step b{BATCH} 3x32x32\t{statistics.median(times):.1f}\t{RUNS}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"resnet20 train step b{BATCH} peak resident MiB\t{peak_mib:.1f}\t1")


if __name__ == "__main__":
    sys.exit(main())
