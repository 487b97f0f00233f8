#!/usr/bin/env bash
# The training runs behind issue #4's accuracy targets, one model per call so that each fits a GPU
# host's time limit per command:
#
#   scripts/train-targets.sh lenet5|vgg|resnet20 [extra kiln train flags]
#
# lenet5:   ReLU + max pooling, SGD momentum 0.9, lr 0.01, batch 64, 10 epochs, all 60,000
#           training images (target: 90.0% test accuracy on the CPU and on the GPU)
# vgg:      batch norm, flips and shifts, 15 epochs, cosine lr 0.05, weight decay 5e-4, batch 128
#           (target: 93.5%; 93.66% on the CPU at c8f0153)
# resnet20: batch norm, flips and shifts, $EPOCHS (default 40) epochs, cosine lr 0.1 after one warm-up
#           epoch, weight decay 5e-4, batch 128 (target: 94.0% on a GPU host)
#
# DEVICE (default cuda), DATA (default: data/ when present, else kiln's own search) and OUT (default
# results/targets; on a GPU host the device tool's $OUT, the folder that comes back) choose where it
# runs, what it reads and where it writes; KILN (default ./kiln, else target/release/kiln) is the
# command. Called as dist/gpu-bundle/train-targets.sh, it runs from the bundle's folder. The
# log, metrics.csv, curves.png and filters.png stay; checkpoints are deleted (results are copied
# back from the host, and weights are not results).
set -euo pipefail

model="${1:?usage: train-targets.sh lenet5|vgg|resnet20 [extra kiln train flags]}"
shift
device="${DEVICE:-cuda}"
out="${OUT:-results/targets}"
mkdir -p "$out"
out="$(cd "$out" && pwd)/$model-$device"
# In a GPU bundle, wherever it is called from, run from the bundle's folder (its kiln and data/).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f "$here/bin.tar.xz" ] || [ -x "$here/kiln" ]; then cd "$here"; fi

kiln="${KILN:-}"
if [ -z "$kiln" ]; then
  if [ ! -x ./kiln ] && [ -f bin.tar.xz ]; then
    python3 -c 'import tarfile; tarfile.open("bin.tar.xz").extractall(".")' || tar -xJf bin.tar.xz
  fi
  if [ -x ./kiln ]; then kiln=./kiln; else kiln=target/release/kiln; fi
fi
[ -x "$kiln" ] || { echo "train-targets: no kiln command ($kiln): cargo build --release" >&2; exit 1; }

data=()
if [ -n "${DATA:-}" ]; then
  data=(--data "$DATA")
elif [ -d data ]; then
  data=(--data data)
fi

case "$model" in
  lenet5)
    flags=(--model lenet5 --epochs 10 --batch-size 64 --lr 0.01 --optimizer momentum --val-fraction 0) ;;
  vgg)
    flags=(--model vgg --epochs 15 --batch-size 128 --lr 0.05 --optimizer momentum --weight-decay 5e-4
           --schedule cosine --augment) ;;
  resnet20)
    flags=(--model resnet20 --epochs "${EPOCHS:-40}" --batch-size 128 --lr 0.1 --optimizer momentum
           --weight-decay 5e-4 --schedule cosine --warmup 1 --augment) ;;
  *)
    echo "train-targets: unknown model $model (lenet5, vgg or resnet20)" >&2
    exit 2 ;;
esac

mkdir -p "$out"
log="$out/train.log"
echo "== $model on $device: $kiln train ${flags[*]} --device $device $* --out $out"
rc=0
"$kiln" train "${flags[@]}" --device "$device" --seed 1 "${data[@]}" "$@" --out "$out" >"$log" 2>&1 || rc=$?
grep -E 'done|validation|test accuracy' "$log" | sed 's/^/  /' || true
rm -f "$out"/*.safetensors
exit "$rc"
