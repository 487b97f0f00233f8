#!/usr/bin/env bash
# kiln's CPU backend against PyTorch on the CPU, side by side in one run, on the same threads.
# Installs PyTorch into a throw-away venv (~/.cache/kiln/torch-venv) once, runs both, and writes a
# Markdown report to bench/results/cpu-compare-<date>.md. Usage: bench/cpu_compare.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
venv="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/torch-venv"
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "cpu_compare: installing PyTorch into $venv (one-time)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch numpy
fi

kiln_out=$(mktemp) torch_out=$(mktemp)
trap 'rm -f "$kiln_out" "$torch_out"' EXIT
# The conv layer: three rounds, alternating the two sides so that a slow spell of a shared machine
# hits both; each side's figure is the median of its three round medians.
cargo bench --quiet --bench cpu_compare --no-run
for round in 1 2 3; do
  RAYON_NUM_THREADS="$threads" cargo bench --quiet --bench cpu_compare >> "$kiln_out"
  THREADS="$threads" OMP_NUM_THREADS="$threads" "$venv/bin/python" bench/torch_cpu.py >> "$torch_out"
done
median_of_rounds() {
  python3 -c '
import statistics, sys
rows, comments = {}, []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        comments.append(line) if line not in comments else None
        continue
    name, ms, runs = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append(float(ms))
for c in comments:
    print(c, end="")
for name, ms in rows.items():
    print(f"{name}\t{statistics.median(ms):.3f}\t{len(ms)} rounds")
' "$1" > "$1.median" && mv "$1.median" "$1"
}
median_of_rounds "$kiln_out"
median_of_rounds "$torch_out"

# LeNet-5 training epochs on Fashion-MNIST (all 60,000 images, batch 64, SGD momentum, training
# loop only): 3 alternating rounds of 2 epochs per side; each side's figure is the median epoch.
cargo build --quiet --release --bin kiln
kiln_epochs=() torch_epochs=()
for round in 1 2 3; do
  run_dir=$(mktemp -d)
  RAYON_NUM_THREADS="$threads" target/release/kiln train --model lenet5 --epochs 2 --val-fraction 0 \
    --device cpu --out "$run_dir" > "$run_dir/log" 2>&1
  kiln_epochs+=($(python3 -c "import csv,sys; print(*(x['seconds'] for x in csv.DictReader(open(sys.argv[1]))))" "$run_dir/metrics.csv"))
  rm -rf "$run_dir"
  torch_epochs+=($(THREADS="$threads" OMP_NUM_THREADS="$threads" EPOCHS=2 "$venv/bin/python" bench/torch_lenet.py |
    sed -n 's/^epoch [0-9]*: \([0-9.]*\) s.*/\1/p'))
done
median_ms() { python3 -c "import statistics,sys; print(f'{1e3*statistics.median(map(float, sys.argv[1:])):.1f}')" "$@"; }
printf 'LeNet-5 epoch, Fashion-MNIST 60k, batch 64\t%s\t%s epochs\n' "$(median_ms "${kiln_epochs[@]}")" "${#kiln_epochs[@]}" >> "$kiln_out"
printf 'LeNet-5 epoch, Fashion-MNIST 60k, batch 64\t%s\t%s epochs\n' "$(median_ms "${torch_epochs[@]}")" "${#torch_epochs[@]}" >> "$torch_out"

mkdir -p bench/results
report="bench/results/cpu-compare-$(date -u +%Y-%m-%d).md"
tmp="$report.tmp"
{
  echo "# kiln CPU vs PyTorch CPU"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- threads: $threads on both sides; $(grep '^#' "$torch_out" | sed 's/^# //')"
  echo "- method: conv layer: median of 3 alternating rounds, each the median wall time of 20 warm runs"
  echo "  after 5 warm-up runs; LeNet-5: median epoch of 3 alternating rounds of 2 epochs (training"
  echo "  loop only, data already in memory on both sides); each side in its own process"
  echo
  echo "| workload | kiln ms | PyTorch ms | kiln / PyTorch time (lower is better) |"
  echo "| --- | ---: | ---: | ---: |"
  join -t $'\t' <(grep -v '^#' "$kiln_out" | sort) <(grep -v '^#' "$torch_out" | sort) |
    awk -F'\t' '{ printf "| %s | %.3f | %.3f | %.2f |\n", $1, $2, $4, $2 / $4 }'
} > "$tmp"
mv "$tmp" "$report"
cat "$report"
