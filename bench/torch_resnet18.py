"""torchvision's ResNet-18 forward + cross-entropy + backward on the CPU, the reference for `cargo
bench --bench cpu_compare -- resnet18` (issue 14's CPU target): batch 16 of random 3x224x224 images,
1000 classes, training mode, gradients dropped each run (no optimizer step). Median wall time of 3
runs after 1 warm-up run, printed as `workload<TAB>ms<TAB>runs`. Run through bench/cpu_compare.sh
(`resnet18` section), which pins threads, or directly:
    THREADS=2 ~/.cache/kiln/torch-venv/bin/python bench/torch_resnet18.py
"""

import os
import statistics
import sys
import time

import torch
import torchvision

BATCH, WARMUP, RUNS = 16, 1, 3


def main():
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    print(f"# torch {torch.__version__} cpu, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads")
    model = torchvision.models.resnet18(num_classes=1000).train()
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(BATCH, 3, 224, 224)
    y = torch.tensor([(i * 7919 + 13) % 1000 for i in range(BATCH)])

    def run():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    for _ in range(WARMUP):
        run()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    print(f"resnet18 forward+backward b{BATCH} 3x224x224\t{statistics.median(times):.1f}\t{RUNS}")


if __name__ == "__main__":
    sys.exit(main())
