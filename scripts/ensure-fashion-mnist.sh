#!/usr/bin/env bash
# Makes sure Fashion-MNIST is where `kiln train` looks for it: $KILN_DATA if set, else
# /usr/share/datasets/fashion-mnist, installed from Debian/Ubuntu's `dataset-fashion-mnist`
# package when missing (as root, or through sudo when it needs no password).
set -euo pipefail
dir="${KILN_DATA:-/usr/share/datasets/fashion-mnist}"
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then
  exit 0
fi
if [ -n "${KILN_DATA:-}" ]; then
  echo "ensure-fashion-mnist: KILN_DATA=$KILN_DATA has no Fashion-MNIST files" >&2
  exit 1
fi
echo "ensure-fashion-mnist: installing Debian's dataset-fashion-mnist package" >&2
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
elif sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
else
  echo "ensure-fashion-mnist: run 'sudo apt-get install dataset-fashion-mnist', or set KILN_DATA" >&2
  echo "to a directory holding the four Fashion-MNIST IDX files" >&2
  exit 1
fi
