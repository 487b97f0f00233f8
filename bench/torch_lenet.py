"""LeNet-5 (ReLU, max pooling) on Fashion-MNIST in PyTorch on the CPU: the reference for
`kiln train --model lenet5` (SGD momentum 0.9, lr 0.01, batch 64, 10 epochs, all 60,000 training
images, inputs normalized with the training mean/std). Prints each epoch's time and the final test
accuracy. Run through bench/cpu_compare.sh (which pins threads) or directly:
    THREADS=2 ~/.cache/kiln/torch-venv/bin/python bench/torch_lenet.py [--init kaiming]
`--init kaiming` draws weights as kiln does (He normal, zero bias) instead of PyTorch's default.
"""

import gzip
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

DATA = os.environ.get("KILN_DATA", "/usr/share/datasets/fashion-mnist")


def idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    seed = int(os.environ.get("SEED", "1"))
    torch.manual_seed(seed)
    x_train = idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y_train = idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    x_test = idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y_test = idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean, std = x_train.mean(), x_train.std()
    x_train = torch.from_numpy((x_train - mean) / std).unsqueeze(1)
    x_test = torch.from_numpy((x_test - mean) / std).unsqueeze(1)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)

    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if "--init" in sys.argv and sys.argv[sys.argv.index("--init") + 1] == "kaiming":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    epoch_times = []
    for epoch in range(int(os.environ.get("EPOCHS", "10"))):
        perm = torch.randperm(len(x_train))
        start = time.perf_counter()
        model.train()
        for i in range(0, len(perm), 64):
            idx_b = perm[i:i + 64]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx_b]), y_train[idx_b])
            loss.backward()
            opt.step()
        epoch_times.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        print(f"epoch {epoch + 1}: {epoch_times[-1]:.2f} s, test accuracy {100 * acc:.2f}%", flush=True)
    print(f"torch {torch.__version__}, {threads} threads: median epoch {statistics.median(epoch_times):.2f} s, "
          f"final test accuracy {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
