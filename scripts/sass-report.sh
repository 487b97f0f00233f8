#!/usr/bin/env bash
# Registers, spills and shared memory of every kernel in the cubins build.rs wrote into OUT_DIR
# (the very machine code the executables embed), per architecture, and whether `setmaxnreg`
# survived into the SASS of the kernels that use it (ptxas drops it, with a warning, when it can't
# prove the register counts; then the wide wgmma tiles would run with the producer's registers).
#
#   scripts/sass-report.sh OUT_DIR > sass-resources.txt
#
# cuobjdump and nvdisasm are not in the nvcc wheels: they come from NVIDIA's own PyPI wheels,
# pinned, installed once into the cache beside nvcc (13.2 is the oldest on PyPI; it reads the
# sm_80/sm_90/sm_90a cubins nvcc 13.0 writes). Without them the report says so and exits 0.
set -euo pipefail
out_dir="${1:?usage: sass-report.sh OUT_DIR}"
cache_root="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
tools="$cache_root/cuda-tools-13.2"
bin="$tools/nvidia/cu13/bin"

if [ ! -x "$bin/cuobjdump" ] || [ ! -x "$bin/nvdisasm" ]; then
  pip="$cache_root/cuda-13.0/bin/pip"
  [ -x "$pip" ] || pip="$(command -v pip3 || true)"
  if [ -z "$pip" ] || ! "$pip" install --quiet --disable-pip-version-check --no-deps --target "$tools" \
    nvidia-cuda-cuobjdump==13.2.51 nvidia-cuda-nvdisasm==13.2.51 >&2; then
    echo "SASS report not made: cuobjdump could not be installed (pip install nvidia-cuda-cuobjdump==13.2.51)"
    exit 0
  fi
  chmod +x "$bin"/* 2>/dev/null || true
fi
export PATH="$bin:$PATH"

echo "SASS resource usage of the embedded cubins ($(cuobjdump --version | tail -n 1))"
echo "REG registers per thread; LOCAL/STACK bytes > 0 mean spills or a stack; SHARED static bytes."
for cubin in "$out_dir"/*.cubin; do
  name="$(basename "$cubin" .cubin)"
  echo
  echo "== $name"
  cuobjdump -res-usage "$cubin" | awk '
    /^ *Function / { sub(/^ *Function /, ""); sub(/:$/, ""); f = $0; next }
    f != "" && /REG:/ {
      line = ""
      for (i = 1; i <= NF; i++) if ($i ~ /^(REG|STACK|SHARED|LOCAL):/) line = line " " $i
      spill = ($0 ~ /LOCAL:[1-9]/ || $0 ~ /STACK:[1-9]/) ? "  <- SPILLS" : ""
      printf "  %-48s%s%s\n", f, line, spill
      f = ""
    }'
done
echo
echo "== setmaxnreg in the SASS (USETMAXREG instructions per kernel)"
for cubin in "$out_dir"/*.cubin; do
  cuobjdump -sass "$cubin" | awk -v file="$(basename "$cubin")" '
    /Function :/ { f = $NF }
    /USETMAXREG/ { n[f]++ }
    END { for (k in n) printf "  %s %s: %d\n", file, k, n[k] }' | sort
done
echo
spilling="$(for cubin in "$out_dir"/*.cubin; do cuobjdump -res-usage "$cubin"; done | grep -cE 'LOCAL:[1-9]|STACK:[1-9]' || true)"
echo "kernels with spills or a stack, over all architectures: $spilling"
