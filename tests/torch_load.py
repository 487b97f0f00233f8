#!/usr/bin/env python3
"""Loads a kiln checkpoint into the equivalent PyTorch model and reproduces kiln's logits.

    python tests/torch_load.py CHECKPOINT ARCH IO [--tol 1e-4]

CHECKPOINT  a safetensors file written by kiln (`kiln::train::save_checkpoint` with
            `kiln::train::state::model_tensors`): model tensors under "model.<state_dict name>".
ARCH        one of lenet5, lenet5-classic, vgg, resnet20 (kiln's own networks; torchvision's
            are checked by tests/torchvision_logits.py).
IO          a safetensors file with "input" [N, C, S, S] and "logits" [N, classes]: kiln's
            evaluation-mode output for that input. C, S and classes size the model.

The models below mirror src/nn/models/ (lenet.rs, vgg_small.rs, resnet20.rs) layer for layer, so
that the state_dict names match kiln's `parameters()`/`buffers()` names. Loading is strict: a kiln tensor the torch model does
not use, or a torch tensor the checkpoint lacks, is an error. The one exception is BatchNorm's
`num_batches_tracked`, which kiln does not keep (it only matters with momentum=None) and which is
filled in with 0. Tensors outside "model." (optimizer state) are not part of the model and are
listed, then ignored.

Run by tests/torch_interop.rs; needs torch and safetensors (pip install torch safetensors).
Exit status 0 when the logits match within the tolerance, 1 otherwise.
"""

import argparse
import sys

import torch
from torch import nn
from safetensors.torch import load_file

MODEL_PREFIX = "model."


def lenet5(in_channels, image_size, classes, classic):
    """LeNet-5: 28x28 inputs get padding 2 on the first conv (kiln: `lenet5`)."""
    act = nn.Tanh if classic else nn.ReLU
    pool = nn.AvgPool2d if classic else nn.MaxPool2d
    pad = 2 if image_size == 28 else 0
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad),  # 0
        act(),  # 1
        pool(2),  # 2
        nn.Conv2d(6, 16, 5),  # 3
        act(),  # 4
        pool(2),  # 5
        nn.Flatten(),  # 6
        nn.Linear(16 * side * side, 120),  # 7
        act(),  # 8
        nn.Linear(120, 84),  # 9
        act(),  # 10
        nn.Linear(84, classes),  # 11
    )


def vgg(in_channels, image_size, classes):
    """[conv3x3 (no bias)-BN-ReLU]x2 + maxpool 2 for 32, 64, 128 channels, fc 256, dropout, fc."""
    layers = []
    channels, side = in_channels, image_size
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width, eps=1e-5, momentum=0.1),
                nn.ReLU(),
            ]
            channels = width
        layers.append(nn.MaxPool2d(2))
        side //= 2
    layers += [
        nn.Flatten(),
        nn.Linear(channels * side * side, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, classes),
    ]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """kiln's ResidualBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU. The shortcut is a
    strided 1x1 conv + BN ("shortcut.0", "shortcut.1") when the size or the channels change."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False),
                nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
            )
        else:
            self.shortcut = None

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(h + skip)


def resnet20(in_channels, image_size, classes):
    """Stem conv3x3 (16)-BN-ReLU, 3 stages x 3 blocks (16/32/64, stride 2 at the start of stages
    2 and 3), global average pooling, flatten, fc."""
    del image_size  # global average pooling: any size
    layers = [
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16, eps=1e-5, momentum=0.1),
        nn.ReLU(),
    ]
    channels = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(ResidualBlock(channels, width, stride))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


BUILDERS = {
    "lenet5": lambda c, s, k: lenet5(c, s, k, classic=False),
    "lenet5-classic": lambda c, s, k: lenet5(c, s, k, classic=True),
    "vgg": vgg,
    "resnet20": resnet20,
}


def fail(message):
    print(f"torch_load.py: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def load_strict(model, checkpoint_path):
    """Loads the "model." tensors of the checkpoint into `model`, strictly (see the module doc)."""
    tensors = load_file(checkpoint_path)
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    others = sorted(k for k in tensors if not k.startswith(MODEL_PREFIX))
    if others:
        print(f"ignoring {len(others)} non-model tensors: {', '.join(others[:5])}"
              f"{' ...' if len(others) > 5 else ''}")
    if not state:
        fail(f"{checkpoint_path} holds no tensor named {MODEL_PREFIX}*")

    expected = model.state_dict()
    added = 0
    for name, t in expected.items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros_like(t)
            added += 1
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        fail(f"state_dict names differ\n  torch tensors missing from the checkpoint: {missing}\n"
             f"  checkpoint tensors torch does not use: {unexpected}")
    for name, t in expected.items():
        if state[name].shape != t.shape or state[name].dtype != t.dtype:
            fail(f"{name}: checkpoint has {state[name].dtype} {tuple(state[name].shape)}, "
                 f"torch expects {t.dtype} {tuple(t.shape)}")
    model.load_state_dict(state, strict=True)
    loaded = len(state) - added
    print(f"loaded {loaded} tensors (+{added} num_batches_tracked filled in)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("arch", choices=sorted(BUILDERS))
    parser.add_argument("io", help="safetensors file with 'input' and 'logits'")
    parser.add_argument("--tol", type=float, default=1e-4, help="max abs error allowed")
    args = parser.parse_args()

    io = load_file(args.io)
    if "input" not in io or "logits" not in io:
        fail(f"{args.io} needs tensors 'input' and 'logits', has {sorted(io)}")
    x, want = io["input"], io["logits"]
    if x.dim() != 4 or x.shape[2] != x.shape[3] or want.dim() != 2:
        fail(f"expected input [N, C, S, S] and logits [N, classes], got {tuple(x.shape)} "
             f"and {tuple(want.shape)}")

    torch.manual_seed(0)
    model = BUILDERS[args.arch](x.shape[1], x.shape[2], want.shape[1])
    load_strict(model, args.checkpoint)
    model.eval()
    with torch.no_grad():
        got = model(x)
    if got.shape != want.shape:
        fail(f"torch logits have shape {tuple(got.shape)}, kiln's {tuple(want.shape)}")
    err = (got - want).abs()
    max_err = err.max().item()
    print(f"{args.arch}: input {tuple(x.shape)}, logits {tuple(got.shape)}, "
          f"max |torch - kiln| = {max_err:.3e} (tolerance {args.tol:.0e})")
    if not max_err <= args.tol:  # also catches NaN
        worst = divmod(int(err.argmax()), got.shape[1])
        fail(f"{args.arch}: logits differ by {max_err:.3e} > {args.tol:.0e}; worst at "
             f"[{worst[0]}, {worst[1]}]: torch {got[worst].item():.6f}, "
             f"kiln {want[worst].item():.6f}")
    print("OK")


if __name__ == "__main__":
    main()
