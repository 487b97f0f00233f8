"""PyTorch on the CPU for the workloads benches/cpu_compare.rs times in kiln, measured the same way
(median wall time of 20 warm runs after 5 warm-up runs), printed as `workload<TAB>median_ms<TAB>runs`.

Run through bench/cpu_compare.sh, which installs PyTorch into a throw-away venv and pins both
sides to the same number of threads.
"""

import os
import statistics
import sys
import time

import torch

WARMUP, RUNS = 5, 20


def median_ms(work):
    for _ in range(WARMUP):
        work()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__} cpu, {torch.get_num_threads()} threads")
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    x = torch.randn(64, 16, 14, 14)
    with torch.no_grad():
        fwd = median_ms(lambda: conv(x))
    print(f"conv 64x16x14x14 3x3 16->32 forward\t{fwd:.3f}\t{RUNS}")
    xg = x.clone().requires_grad_(True)

    def fwd_bwd():
        conv.zero_grad(set_to_none=True)
        xg.grad = None
        conv(xg).sum().backward()

    print(f"conv 64x16x14x14 3x3 16->32 forward+backward\t{median_ms(fwd_bwd):.3f}\t{RUNS}")


if __name__ == "__main__":
    sys.exit(main())
