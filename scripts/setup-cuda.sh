#!/usr/bin/env bash
# Installs the CUDA compiler (nvcc) that build.rs uses to turn kernels/*.cu into PTX.
#
# CUDA 13.0 is pinned because the GPU hosts run driver 580; a newer nvcc emits PTX that driver
# rejects. The wheels go into a venv in a cache folder outside the repository, so a clean clone
# reuses them. Idempotent: a second run only checks and prints the path. Does nothing when a
# suitable nvcc (release 13.0) is already on the machine.
#
# Prints nothing but progress; the last line is the folder that holds nvcc.
set -euo pipefail

want_release="13.0"
cache_root="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
venv="$cache_root/cuda-$want_release"

nvcc_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p'; }

# An nvcc already on the machine, of the pinned release, is used as it is.
for candidate in "${KILN_NVCC:-}" "${NVCC:-}" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "$(command -v nvcc || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$(nvcc_release "$candidate")" = "$want_release" ]; then
    echo "setup-cuda: using nvcc $want_release at $candidate" >&2
    dirname "$candidate"
    exit 0
  fi
done

find_venv_nvcc() { find "$venv/lib" -path "*nvidia/cu13/bin/nvcc" -type f 2>/dev/null | head -n 1 || true; }

nvcc_path="$(find_venv_nvcc)"
if [ -z "$nvcc_path" ] || [ "$(nvcc_release "$nvcc_path")" != "$want_release" ]; then
  echo "setup-cuda: installing nvcc $want_release into $venv (one-time, ~1 GB download)" >&2
  python=$(command -v python3 || true)
  if [ -z "$python" ]; then
    echo "setup-cuda: python3 is needed (apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup-cuda: installing python3-venv" >&2
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
      echo "setup-cuda: python3's venv module is missing: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  mkdir -p "$cache_root"
  [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 \
    nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-cccl==13.0.85 \
    nvidia-nvvm==13.0.88
  nvcc_path="$(find_venv_nvcc)"
fi

if [ -z "$nvcc_path" ] || [ "$(nvcc_release "$nvcc_path")" != "$want_release" ]; then
  echo "setup-cuda: nvcc did not install correctly under $venv" >&2
  exit 1
fi
echo "setup-cuda: nvcc $want_release ready at $nvcc_path" >&2
dirname "$nvcc_path"
