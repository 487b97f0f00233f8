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

BATCH, WARMUP, RUNS = 128, 2, 5


def resnet20(in_channels=3, classes=10):
    """kiln's `resnet20` (src/nn/models.rs), as bench/torch_gpu.py defines it: stem conv3x3 (16)-BN-ReLU,
    3 stages x 3 basic blocks (16/32/64, stride 2 at the start of stages 2 and 3, 1x1 conv + BN
    shortcut when the shape changes), global average pooling, fc."""

    class ResidualBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return torch.relu(h + (x if self.shortcut is None else self.shortcut(x)))

    layers = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    channels = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            layers.append(ResidualBlock(channels, width, 2 if stage > 0 and block == 0 else 1))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def main():
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    print(f"# torch {torch.__version__} cpu, {torch.get_num_threads()} threads")
    model = resnet20().train()
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
