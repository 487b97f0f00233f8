#!/usr/bin/env python3
"""torchvision models' weights, an input and their logits, for kiln to reproduce.

    python tests/torchvision_logits.py logits ARCH OUT_DIR --input CxHxW --classes N
                                       [--width-mult W] [--batch B] [--seed S]
    python tests/torchvision_logits.py keys OUT_DIR

`logits` builds torchvision's ARCH (kiln's name: alexnet, vgg11, vgg16, vgg16-bn, resnet18,
resnet34, resnet50, googlenet, mobilenet-v2) with random weights, moves every batch norm's running
statistics and affine parameters away from their defaults (so a swapped or dropped tensor cannot
go unnoticed), and writes, in evaluation mode:
    OUT_DIR/weights.safetensors   safetensors.torch.save_file(model.state_dict()) (with the int64
                                  num_batches_tracked, as torchvision saves them)
    OUT_DIR/io.safetensors        "input" [B, C, H, W] and "logits" [B, N]
For inputs of 32x32 or less the model is first changed into kiln's small-input variant (the same
modules swapped as kiln's builders do, see src/nn/models/), so the names still are torchvision's.

`keys` writes OUT_DIR/ARCH.txt for every ARCH: "name shape" per line of the state_dict at
torchvision's configuration (3x224x224, 1000 classes), then "parameters COUNT".

Run by tests/torchvision_interop.rs; needs torch, torchvision and safetensors.
"""

import argparse
import pathlib

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models.googlenet import BasicConv2d

SMALL_INPUT = 32  # kiln's `nn::models::SMALL_INPUT`


def build(arch, classes, width_mult):
    m = torchvision.models
    if arch == "mobilenet-v2":
        return m.mobilenet_v2(num_classes=classes, width_mult=width_mult)
    if arch == "googlenet":
        return m.googlenet(num_classes=classes, aux_logits=False, init_weights=True,
                           transform_input=False)
    constructor = {
        "alexnet": m.alexnet, "vgg11": m.vgg11, "vgg16": m.vgg16, "vgg16-bn": m.vgg16_bn,
        "resnet18": m.resnet18, "resnet34": m.resnet34, "resnet50": m.resnet50,
    }[arch]
    return constructor(num_classes=classes)


def to_small_input(arch, model, in_channels):
    """kiln's small-input variant (src/nn/models/): a 3x3 stride-1 stem without its max pools,
    and, for AlexNet and VGG, a 1x1 average pool in front of a classifier sized to match (and
    VGG's max pools rounding up). The first convolution takes `in_channels`."""
    if arch.startswith("resnet"):
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif arch == "googlenet":
        model.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
        model.maxpool1 = nn.Identity()
        model.maxpool2 = nn.Identity()
    elif arch == "mobilenet-v2":
        stem = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, 1, bias=False)
        model.features[2].conv[1][0].stride = (1, 1)
    elif arch == "alexnet":
        model.features[0] = nn.Conv2d(in_channels, 64, 3, 1, 1)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier[1] = nn.Linear(256, 4096)
    elif arch.startswith("vgg"):
        model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        for i, layer in enumerate(model.features):
            if isinstance(layer, nn.MaxPool2d):
                model.features[i] = nn.MaxPool2d(2, 2, ceil_mode=True)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier[0] = nn.Linear(512, 4096)
    return model


def perturb_batch_norms(model, gen):
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                c = layer.num_features
                layer.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                layer.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                layer.weight.copy_(0.5 + torch.rand(c, generator=gen))
                layer.bias.copy_(0.2 * torch.randn(c, generator=gen))
                layer.num_batches_tracked.fill_(7)


def shape_arg(text):
    c, h, w = (int(v) for v in text.split("x"))
    return c, h, w


def logits(args):
    torch.manual_seed(args.seed)
    c, h, w = args.input
    model = build(args.arch, args.classes, args.width_mult)
    if max(h, w) <= SMALL_INPUT:
        model = to_small_input(args.arch, model, c)
    elif c != 3:
        raise SystemExit(f"the standard stems take 3 channels, not {c}")
    gen = torch.Generator().manual_seed(args.seed + 1)
    perturb_batch_norms(model, gen)
    model.eval()
    x = torch.randn(args.batch, c, h, w, generator=gen)
    with torch.no_grad():
        y = model(x)
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "weights.safetensors")
    save_file({"input": x.contiguous(), "logits": y.contiguous()}, out / "io.safetensors")
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.arch} {c}x{h}x{w}: {params} parameters, logits {list(y.shape)}")


ARCHS = ["alexnet", "vgg11", "vgg16", "vgg16-bn", "resnet18", "resnet34", "resnet50",
         "googlenet", "mobilenet-v2"]


def keys(args):
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for arch in ARCHS:
        model = build(arch, 1000, 1.0)
        lines = [f"{k} {'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
        lines.append(f"parameters {sum(p.numel() for p in model.parameters())}")
        (out / f"{arch}.txt").write_text("\n".join(lines) + "\n")
        print(arch, lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("logits")
    p.add_argument("arch", choices=ARCHS)
    p.add_argument("out_dir")
    p.add_argument("--input", type=shape_arg, required=True)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    k = sub.add_parser("keys")
    k.add_argument("out_dir")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logits(args) if args.command == "logits" else keys(args)


if __name__ == "__main__":
    main()
