#!/usr/bin/env python3
"""Scaling model of kiln's data-parallel training (issue 15): per-step compute time against the
time of the gradient all-reduce, with and without overlapping the all-reduce with the backward
pass in buckets, as PyTorch DDP and Horovod do.

Model (every number below is either a measurement named with its source or an input, printed
with the results; nothing else goes in):
- ring all-reduce of G bytes on N ranks: each rank sends and receives 2(N-1)/N * G bytes over the
  bus bandwidth B, in 2(N-1) steps that each pay a latency alpha: t(G) = 2(N-1)/N * G/B + 2(N-1)*alpha;
- a step is forward (1/3 of the compute time T) then backward (2/3 of T), and the backward pass
  produces the gradient bytes at an even rate, last layer first;
- without overlap the all-reduce starts when the backward pass has finished: step = T + t(G);
- with overlap the gradients go in buckets of b bytes, each reduced as soon as it is complete and
  the previous bucket's reduction is done (one reduction at a time, the same order on every rank):
  step = T_forward + max(backward end, last bucket's end); the bucket size that minimises it is
  the one reported;
- efficiency = T / step (1.0 is linear scaling: N ranks do N times the work per unit time).

Usage: bench/scaling.py [--markdown]   (no dependencies beyond Python 3)
"""

import math
import sys

MB = 1e6

# Gradient sizes: f32 gradients, 4 bytes per parameter.
# LeNet-5 and ResNet-20: `kiln summary lenet5` (1x28x28) and `kiln summary resnet20 --input 3x32x32`.
# ResNet-50: torchvision.models.resnet50(), sum(p.numel() for p in m.parameters()) = 25,557,032.
PARAMS = {"LeNet-5": 61_706, "ResNet-20": 272_474, "ResNet-50": 25_557_032}

# Per-step compute times, seconds, at batch 64 per rank.
# Measured on this machine's CPU (kiln's CPU backend, bench/results/cpu-compare-2026-12-04-issue17.md):
# LeNet-5: a Fashion-MNIST epoch (938 steps of 64) in 6560 ms -> 7.0 ms per step;
# ResNet-20: a batch-128 step in 879 ms -> 440 ms at batch 64 (the step is linear in the batch).
CPU_STEP_S = {"LeNet-5": 6.560 / 938, "ResNet-20": 0.8794 / 2}
# GPU step times are INPUTS (no GPU measurement of these steps exists in this repository yet):
# ResNet-50 at batch 64 (224x224): 3 x 4.1 GMAC per image forward+backward = 2 x 3 x 4.1e9 x 64
# = 1.57 TFLOP per step, at an assumed 40% of an H100 SXM's 989 TFLOP/s dense bf16 peak -> 4.0 ms.
# LeNet-5 and ResNet-20 are launch-bound on a GPU, not FLOP-bound: assumed 1.0 ms and 3.0 ms
# (about 40 and 120 kernel launches of ~25 us each). Replace them with `kiln train` on a GPU:
# step time = batch / (images per second in metrics.csv).
GPU_STEP_S = {
    "LeNet-5": 1.0e-3,
    "ResNet-20": 3.0e-3,
    "ResNet-50": 2 * 3 * 4.1e9 * 64 / (0.40 * 989e12),
}

# Links (INPUTS, from the vendors' specifications, at an assumed 80% of the line rate for NCCL's
# bus bandwidth):
# - NVLink 4 on an 8-GPU H100 SXM node: 900 GB/s per GPU (both directions), 450 GB/s each way;
# - 400 Gb/s InfiniBand NDR, one port per GPU (the DGX H100 layout): 50 GB/s each way; NCCL's ring
#   across nodes runs at the slowest link, the InfiniBand one.
# Latency per ring step: 5 us over NVLink, 10 us over InfiniBand (inputs; NCCL's small-message
# latencies are of this order).
LINKS = {
    "NVLink, 8 GPUs on one node": (450e9 * 0.8, 5e-6),
    "InfiniBand 400 Gb/s": (50e9 * 0.8, 10e-6),
}
CONFIGS = [
    ("1 node x 8 GPUs, NVLink", 8, "NVLink, 8 GPUs on one node"),
    ("2 nodes x 8 GPUs, IB 400G", 16, "InfiniBand 400 Gb/s"),
    ("16 nodes x 8 GPUs, IB 400G", 128, "InfiniBand 400 Gb/s"),
]
BUCKETS_MB = [0.25, 0.5, 1, 2, 5, 10, 25, 50, 100]


def allreduce_s(nbytes, ranks, bw, alpha):
    """Ring all-reduce time of `nbytes` on `ranks` ranks."""
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bw + 2 * (ranks - 1) * alpha


def step_without_overlap(compute, nbytes, ranks, bw, alpha):
    return compute + allreduce_s(nbytes, ranks, bw, alpha)


def step_with_overlap(compute, nbytes, ranks, bw, alpha, bucket):
    """Forward, then backward producing buckets at an even rate, each reduced when ready."""
    forward, backward = compute / 3, 2 * compute / 3
    count = max(1, math.ceil(nbytes / bucket))
    done = 0.0  # when the previous bucket's reduction ends, from the start of backward
    for i in range(count):
        size = min(bucket, nbytes - i * bucket)
        ready = backward * min(1.0, (i + 1) * bucket / nbytes)
        done = max(done, ready) + allreduce_s(size, ranks, bw, alpha)
    return forward + max(backward, done)


def best_overlap(compute, nbytes, ranks, bw, alpha):
    """(step time, bucket bytes) of the best bucket size in BUCKETS_MB."""
    return min(
        (step_with_overlap(compute, nbytes, ranks, bw, alpha, b * MB), b * MB) for b in BUCKETS_MB
    )


# kiln's CPU backend, one rank per node (the measured CPU step times above).
CPU_CONFIGS = [
    ("CPU: 2 nodes x 1 rank, IB 400G", 2, "InfiniBand 400 Gb/s"),
    ("CPU: 16 nodes x 1 rank, IB 400G", 16, "InfiniBand 400 Gb/s"),
]


def cases():
    for model in PARAMS:
        for config in CONFIGS:
            yield model, GPU_STEP_S[model], config
    for model, step in CPU_STEP_S.items():
        for config in CPU_CONFIGS:
            yield model, step, config


def rows():
    for model, compute, (name, ranks, link) in cases():
        nbytes = 4 * PARAMS[model]
        bw, alpha = LINKS[link]
        plain = compute / step_without_overlap(compute, nbytes, ranks, bw, alpha)
        at_25 = compute / step_with_overlap(compute, nbytes, ranks, bw, alpha, 25 * MB)
        best_step, best_bucket = best_overlap(compute, nbytes, ranks, bw, alpha)
        yield model, nbytes, compute, name, plain, at_25, compute / best_step, best_bucket


def main():
    markdown = "--markdown" in sys.argv
    head = ["model", "gradient MB", "step ms", "configuration", "no overlap",
            "overlap, 25 MB buckets", "overlap, best bucket", "best bucket MB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for model, nbytes, compute, name, plain, at_25, best, bucket in rows():
        cells = [model, f"{nbytes / MB:.2f}", f"{compute * 1e3:.2f}", name, f"{plain:.1%}",
                 f"{at_25:.1%}", f"{best:.1%}", f"{bucket / MB:g}"]
        print("| " + " | ".join(cells) + " |")
    if markdown:
        print()
        print("GPU step times are inputs (see GPU_STEP_S); CPU step times were measured on this "
              "machine (CPU_STEP_S); link bandwidths and latencies are inputs (LINKS).")


if __name__ == "__main__":
    main()
