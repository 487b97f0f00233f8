#!/usr/bin/env bash
# The measured 2-rank CPU speed-up (issue 15): `kiln train` (release, --features mpi) on the CPU
# with 1 rank x 1 thread x batch 32, 2 ranks x 1 thread x batch 32 (mpirun, the same work per rank)
# and 1 rank x 2 threads x batch 64 (the same global batch and cores), REPS times each, interleaved;
# prints seconds per epoch and images per second from metrics.csv. Data: DIR with Fashion-MNIST-
# named IDX files (bench/scaling_cpu.sh DIR MODEL EPOCHS [REPS]).
set -euo pipefail
data=${1:?data dir}; model=${2:-lenet5}; epochs=${3:-3}; reps=${4:-3}
kiln="$(dirname "$0")/../target/release/kiln"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
run() { # label ranks threads batch
  rm -rf "$out/run"
  local args=(train --device cpu --data "$data" --out "$out/run" --model "$model" --epochs "$epochs"
    --val-fraction 0 --batch-size "$4")
  if [ "$2" = 1 ]; then
    RAYON_NUM_THREADS=$3 "$kiln" "${args[@]}" >/dev/null 2>&1
  else
    mpirun --allow-run-as-root --oversubscribe -np "$2" -x RAYON_NUM_THREADS="$3" "$kiln" "${args[@]}" >/dev/null 2>&1
  fi
  tail -n +2 "$out/run/metrics.csv" | awk -F, -v l="$1" \
    '{s += $8; i += $9; n += 1} END {printf "%s  %.3f s/epoch  %.0f images/s\n", l, s / n, i / n}'
}
echo "$model, $epochs epochs, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$reps"); do
  run "1 rank  x 1 thread  x b32" 1 1 32
  run "2 ranks x 1 thread  x b32" 2 1 32
  run "1 rank  x 2 threads x b64" 1 2 64
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
