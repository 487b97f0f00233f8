"""PyTorch on the GPU for the workloads benches/cuda_kernels.rs times in kiln, measured the same way:
5 warm-up runs, then the median of 25 runs, each run between two CUDA events and synchronized, on
random inputs. One JSON object per line to stdout and to --out:

    {"workload": "sgemm 4096x4096x4096", "ms": 9.87, "note": "...", "flops": ..., "bytes": ...}

`workload` is the name the Rust bench gives the same work (bench/gpu_report.py joins on it).
Settings: cudnn.benchmark on (so the first warm-up runs pick cuDNN's fastest algorithm), TF32 off
for matmul and cuDNN (f32 is f32 on both sides); a precision check against float64 says whether that
held. Training steps read the loss and the number of correct predictions back to the host each
step, as kiln's `train_step` does; the LeNet-5 step is also timed without that read-back.

Run (the GPU bundle's run.sh does): python3 torch_gpu.py --out results/torch.jsonl
`--smoke` runs everything on the CPU at tiny sizes with the host clock: it checks that the script
runs on a machine without a GPU and measures nothing. Without PyTorch or a usable CUDA device it
prints why and exits 0. Needs no network.
"""

import argparse
import json
import statistics
import sys
import time
import traceback

WARMUP, RUNS = 5, 25


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="also write the JSON lines to this file")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, shapes shrunk 64x, 1 warm-up and 3 runs: checks the script, measures nothing")
    ap.add_argument("--only", default="",
                    help="comma-separated substrings: run only the workloads whose name has one")
    return ap.parse_args()


class Bench:
    def __init__(self, torch, args, out):
        self.torch = torch
        self.smoke = args.smoke
        self.shrink = 64 if args.smoke else 1
        self.warmup, self.runs = (1, 3) if args.smoke else (WARMUP, RUNS)
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.only = [s for s in args.only.split(",") if s]
        self.out = out
        self.failed = 0

    def emit(self, record):
        line = json.dumps(record)
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()

    def wanted(self, workload):
        return not self.only or any(s in workload for s in self.only)

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def times(self, work):
        """Each timed run's milliseconds, after the warm-up runs."""
        torch = self.torch
        for _ in range(self.warmup):
            work()
        self.sync()
        times = []
        for _ in range(self.runs):
            if self.device.type == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                work()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                work()
                times.append((time.perf_counter() - t) * 1e3)
        return times

    def measure(self, workload, make, note="", **extra):
        """Builds the work with make() (so its setup stays untimed), times it and emits one line.
        A failure is emitted as an error line and the script goes on."""
        if not self.wanted(workload):
            return None
        try:
            work = make()
            times = self.times(work)
        except Exception as e:  # noqa: BLE001: one workload's failure must not end the others
            self.failed += 1
            self.emit({"workload": workload, "error": f"{type(e).__name__}: {e}",
                       "trace": traceback.format_exc(limit=3)})
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()
            return None
        record = {"workload": workload, "ms": statistics.median(times), "min_ms": min(times),
                  "max_ms": max(times), "runs": len(times), "note": note}
        record.update(extra)
        self.emit(record)
        return record

    def randn(self, *shape, dtype=None, grad=False):
        t = self.torch.randn(*shape, device=self.device, dtype=dtype or self.torch.float32)
        return t.requires_grad_(grad)


def set_precision(torch):
    """cudnn.benchmark on, TF32 off; returns what the flags read back as."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    flags = {"cudnn_benchmark": torch.backends.cudnn.benchmark,
             "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
             "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
             "float32_matmul_precision": torch.get_float32_matmul_precision()}
    for name, get in (("matmul_fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision),
                      ("cudnn_conv_fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision)):
        try:
            flags[name] = get()
        except Exception:  # noqa: BLE001: older PyTorch has no fp32_precision
            pass
    return flags


# The models, as tests/torch_load.py defines them (that file checks them against kiln's logits);
# copied so this script needs nothing beside PyTorch.

def lenet5(nn):
    """kiln's `lenet5(1, 28, 10, classic = false)`: ReLU and max pooling, padding 2 for 28x28."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def resnet20(torch, nn, in_channels=3, classes=10):
    """kiln's `resnet20`: stem conv3x3 (16)-BN-ReLU, 3 stages x 3 basic blocks (16/32/64, stride 2
    at the start of stages 2 and 3, 1x1 conv + BN shortcut when the shape changes), global average
    pooling, fc."""

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


def rel_err(got, want):
    """||got - want|| / ||want|| in float64."""
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm()).item()


def precision_check(b):
    """f32 matmul and conv against float64 on the same random inputs: plain f32 lands far under
    1e-5, TF32 near 3e-4. Says whether TF32 really is off."""
    F = b.torch.nn.functional
    s = max(1024 // b.shrink, 64)
    x, y = b.randn(s, s), b.randn(s, s)
    mm = rel_err(x @ y, x.double() @ y.double())
    xc, wc = b.randn(8, 64, 32, 32), b.randn(64, 64, 3, 3)
    conv = rel_err(F.conv2d(xc, wc, padding=1), F.conv2d(xc.double(), wc.double(), padding=1))
    verdict = "f32 (no TF32)" if max(mm, conv) < 1e-5 else "NOT plain f32: TF32 or another reduced mode is on"
    b.emit({"workload": "precision check", "matmul_rel_err": mm, "conv_rel_err": conv, "verdict": verdict,
            "note": f"sgemm {s}^3 and conv 8x64x32x32 3x3 vs float64; f32 < 1e-5, TF32 ~3e-4"})


def kernels(b):
    torch, F = b.torch, b.torch.nn.functional
    sh = b.shrink

    # Bandwidth ceiling: a 256 MiB f32 device-to-device copy (bytes read + written).
    n = (256 << 20) // 4 // sh
    mib = n * 4 >> 20

    def copy():
        src = b.randn(n)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    b.measure(f"copy {mib}MiB f32", copy, "Tensor.copy_ (device to device); the bandwidth ceiling",
              bytes=2.0 * n * 4)

    for s in (1024, 4096):
        s = s // 8 if sh > 1 else s

        def mm(s=s):
            a, w = b.randn(s, s), b.randn(s, s)
            c = torch.empty(s, s, device=b.device)
            return lambda: torch.mm(a, w, out=c)
        b.measure(f"sgemm {s}x{s}x{s}", mm, "torch.mm f32 (cuBLAS), TF32 off",
                  flops=2.0 * s ** 3, bytes=3.0 * s * s * 4)

    # kiln's conv-shaped product: W [16, 144] shared, times each image's columns [144, 1024].
    nb = 128 // sh

    def batched():
        w, col = b.randn(16, 144), b.randn(nb, 144, 1024)
        out = torch.empty(nb, 16, 1024, device=b.device)
        return lambda: torch.matmul(w, col, out=out)
    b.measure(f"sgemm batched {nb}x[16x1024x144]", batched, "torch.matmul f32, W broadcast over the batch",
              flops=2.0 * nb * 16 * 1024 * 144, bytes=(16 * 144 + nb * (144 * 1024 + 16 * 1024)) * 4.0)

    for s in (4096, 8192):
        s = s // 16 if sh > 1 else s

        def bf16(s=s):
            a, w = b.randn(s, s, dtype=torch.bfloat16), b.randn(s, s, dtype=torch.bfloat16)
            c = torch.empty(s, s, device=b.device, dtype=torch.bfloat16)
            return lambda: torch.mm(a, w, out=c)
        b.measure(f"bf16 gemm {s}x{s}x{s}", bf16, "torch.mm bf16 (tensor cores): the bf16 matrix ceiling",
                  flops=2.0 * s ** 3, bytes=3.0 * s * s * 2)

    # One conv layer, forward and backward (dx and dW), at ResNet-20's three stage shapes; the
    # loss is sum(conv(x) * dy) so the backward pass gets a random gradient, as in the Rust bench.
    for c, side in ((16, 32), (32, 16), (64, 8)):
        def conv(c=c, side=side):
            layer = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(b.device)
            x, dy = b.randn(nb, c, side, side, grad=True), b.randn(nb, c, side, side)

            def step():
                x.grad = None
                layer.weight.grad = None
                (layer(x) * dy).sum().backward()
            return step
        b.measure(f"conv3x3 fwd+bwd {nb}x{c}x{side}x{side}", conv,
                  f"nn.Conv2d({c}, {c}, 3, padding=1, bias=False) forward + backward (dx, dW), cuDNN",
                  flops=3 * 2.0 * nb * c * c * 9 * side * side)

    # Max pooling 2x2 stride 2 on x [128, 64, 32, 32]: forward writes y and int64 indices; the
    # backward is the kernel autograd calls.
    pn, pc = 128 // sh, 64
    pin, pout = pn * pc * 32 * 32, pn * pc * 16 * 16

    def pool_fwd():
        x = b.randn(pn, pc, 32, 32)
        return lambda: F.max_pool2d(x, 2, 2, return_indices=True)
    b.measure(f"maxpool_fwd {pn}x{pc}x32x32 2x2s2", pool_fwd, "F.max_pool2d(return_indices=True)",
              bytes=pin * 4.0 + pout * (4 + 8))

    def pool_bwd():
        x = b.randn(pn, pc, 32, 32)
        y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        dy = b.randn(*y.shape)
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            dy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
    b.measure(f"maxpool_bwd {pn}x{pc}x32x32 2x2s2", pool_bwd, "aten.max_pool2d_with_indices_backward",
              bytes=pout * (4 + 8) + pin * 4.0)

    en = (1 << 24) // sh
    exp = en.bit_length() - 1

    def relu_fwd():
        x = b.randn(en)
        return lambda: torch.relu(x)
    b.measure(f"relu_fwd 2^{exp}", relu_fwd, "torch.relu (writes y only)", bytes=en * 8.0)

    def relu_bwd():
        y = torch.relu(b.randn(en))
        dy = b.randn(en)
        return lambda: torch.ops.aten.threshold_backward(dy, y, 0.0)
    b.measure(f"relu_bwd 2^{exp}", relu_bwd, "aten.threshold_backward (reads dy and y)", bytes=en * 12.0)

    rows = 4096 // sh

    def xent():
        logits = b.randn(rows, 1000)
        labels = torch.randint(0, 1000, (rows,), device=b.device)
        return lambda: F.cross_entropy(logits, labels)
    b.measure(f"softmax_xent_fwd {rows}x1000", xent, "F.cross_entropy forward (mean loss)",
              bytes=rows * 1000 * 4.0 + rows * 8)

    def total():
        x = b.randn(en)
        return lambda: torch.sum(x)
    b.measure(f"sum 2^{exp}", total, "torch.sum", bytes=en * 4.0)

    # The fused optimizers (one kernel per step, as kiln's), on one parameter of 2^24 elements.
    def optimizer(make_opt):
        def make():
            w = torch.nn.Parameter(b.randn(en))
            w.grad = b.randn(en)
            opt = make_opt([w])
            opt.step()  # creates the state
            return opt.step
        return make
    fused = b.device.type == "cuda"
    b.measure(f"sgd_momentum 2^{exp}",
              optimizer(lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, fused=fused or None)),
              "torch.optim.SGD(momentum=0.9, fused=True)", bytes=en * 20.0)
    b.measure(f"adam 2^{exp}",
              optimizer(lambda p: torch.optim.Adam(p, lr=1e-3, fused=fused or None)),
              "torch.optim.Adam(fused=True)", bytes=en * 28.0)


def train_step(torch, model, opt, x, y, amp=False, read_back=True):
    """One eager training step; with read_back, the loss and the correct count come back to the
    host as in kiln's train_step."""
    F = torch.nn.functional
    opt.zero_grad(set_to_none=True)
    if amp:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
    else:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    if read_back:
        loss.item()
        (logits.argmax(1) == y).sum().item()


def training(b):
    torch, nn = b.torch, b.torch.nn
    batch = 128 // b.shrink
    cuda = b.device.type == "cuda"

    def lenet(read_back):
        def make():
            torch.manual_seed(1)
            model = lenet5(nn).to(b.device).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            x, y = b.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,), device=b.device)
            return lambda: train_step(torch, model, opt, x, y, read_back=read_back)
        return make

    note = "eager, SGD momentum 0.9; reads loss and correct count back each step (as kiln's train_step)"
    b.measure(f"lenet5 train step b{batch}", lenet(True), note, images=batch)
    b.measure(f"lenet5 train step b{batch} no-readback", lenet(False),
              "eager, no host read-back (context only)", images=batch)

    for amp in (False, True):
        name = f"resnet20 train step b{batch} " + ("bf16-autocast" if amp else "f32")

        def make(amp=amp):
            torch.manual_seed(1)
            model = resnet20(torch, nn).to(b.device).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            x, y = b.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,), device=b.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            return lambda: train_step(torch, model, opt, x, y, amp=amp)
        note = ("eager, SGD momentum 0.9 wd 5e-4, " +
                ("autocast bf16 (no grad scaler)" if amp else "f32, TF32 off") +
                "; reads loss and correct count back each step")
        rec = b.measure(name, make, note, images=batch)
        if rec and cuda:
            b.emit({"workload": f"{name} peak memory", "peak_bytes": torch.cuda.max_memory_allocated(),
                    "note": "torch.cuda.max_memory_allocated() over the warm-up and timed steps "
                            "(model, optimizer state, inputs, activations)"})
        if cuda:
            torch.cuda.empty_cache()


def main():
    args = parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001: any import failure means "no PyTorch here"
        print(f"torch_gpu: skipped: PyTorch can't be imported: {type(e).__name__}: {e}")
        return 0
    if not args.smoke and not torch.cuda.is_available():
        why = "no CUDA device visible" if torch.version.cuda else "this PyTorch was built without CUDA"
        print(f"torch_gpu: skipped: torch {torch.__version__} (CUDA {torch.version.cuda}): "
              f"torch.cuda.is_available() is False: {why}")
        return 0
    out = open(args.out, "w") if args.out else None
    try:
        b = Bench(torch, args, out)
        torch.manual_seed(0)
        flags = set_precision(torch)
        meta = {"workload": "meta", "torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "device": torch.cuda.get_device_name(0) if b.device.type == "cuda" else "cpu (smoke)",
                "warmup": b.warmup, "runs": b.runs, "smoke": b.smoke, "date": time.strftime(
                    "%Y-%m-%d %H:%M UTC", time.gmtime()), **flags}
        b.emit(meta)
        for part in (precision_check, kernels, training):
            try:
                part(b)
            except Exception as e:  # noqa: BLE001
                b.failed += 1
                b.emit({"workload": part.__name__, "error": f"{type(e).__name__}: {e}",
                        "trace": traceback.format_exc(limit=3)})
    finally:
        if out:
            out.close()
    if b.failed:
        print(f"torch_gpu: {b.failed} workload(s) failed (see the error lines)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
