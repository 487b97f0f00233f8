#!/usr/bin/env bash
# kiln's CPU backend against PyTorch on the CPU, side by side in one run, on the same threads.
# Installs PyTorch into a throw-away venv (~/.cache/kiln/torch-venv) once, runs both, and writes a
# Markdown report to bench/results/cpu-compare-<date>.md. Usage: bench/cpu_compare.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
venv="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/torch-venv"
if ! "$venv/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
  echo "cpu_compare: installing PyTorch into $venv (one-time)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch torchvision numpy
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

# ResNet-20 training step (batch 128, 3x32x32, SGD momentum): 3 alternating rounds per side, each
# round its own process (median of 5 steps after 2 warm-up steps, then the process's peak resident
# memory, so that peak is the step's: model, optimizer state, activations, gradients, runtime).
for round in 1 2 3; do
  RAYON_NUM_THREADS="$threads" cargo bench --quiet --bench cpu_compare -- resnet20 >> "$kiln_out"
  THREADS="$threads" OMP_NUM_THREADS="$threads" "$venv/bin/python" bench/torch_resnet20.py >> "$torch_out"
done
# torchvision's ResNet-18 forward+backward (batch 16, 3x224x224, 1000 classes, issue 14's target):
# 3 alternating rounds per side, each its own process (median of 3 runs after 1 warm-up run).
for round in 1 2 3; do
  RAYON_NUM_THREADS="$threads" cargo bench --quiet --bench cpu_compare -- resnet18 >> "$kiln_out"
  THREADS="$threads" OMP_NUM_THREADS="$threads" "$venv/bin/python" bench/torch_resnet18.py >> "$torch_out"
done
median_of_rounds "$kiln_out"
median_of_rounds "$torch_out"

# Where the time goes: each kernel of kiln's LeNet-5 and ResNet-20 steps at the step's shapes, and
# PyTorch's profiler over one ResNet-20 step.
kiln_profile=$(RAYON_NUM_THREADS="$threads" cargo bench --quiet --bench cpu_compare -- profile | grep -v '^#')
torch_profile=$(THREADS="$threads" OMP_NUM_THREADS="$threads" "$venv/bin/python" bench/torch_resnet20.py --profile 2>/dev/null |
  sed -n '/^---/,$p')

mkdir -p bench/results
report="bench/results/cpu-compare-$(date -u +%Y-%m-%d).md"
tmp="$report.tmp"
{
  echo "# kiln CPU vs PyTorch CPU"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- processor (lscpu): $(lscpu | sed -n 's/^Model name: *//p'); L2 $(lscpu | sed -n 's/^L2 cache: *//p'), L3 $(lscpu | sed -n 's/^L3 cache: *//p')"
  echo "- vector extensions: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(sse4_2|avx|avx2|fma|f16c|avx512[a-z0-9_]*|amx[a-z0-9_]*)$' | sort -u | tr '\n' ' ')"
  echo "- load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-minute load average at the end; other processes may share the cores)"
  echo "- commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- threads: $threads on both sides; $(grep '^#' "$torch_out" | sed 's/^# //' | paste -sd ';' | sed 's/;/; /g')"
  echo "- method: conv layer: median of 3 alternating rounds, each the median wall time of 20 warm runs"
  echo "  after 5 warm-up runs; LeNet-5: median epoch of 3 alternating rounds of 2 epochs (training"
  echo "  loop only, data already in memory on both sides); ResNet-20: median of 3 alternating rounds,"
  echo "  each its own process timing 5 steps after 2 warm-up steps; peak resident memory is that"
  echo "  process's getrusage ru_maxrss (lower is better, like the times); ResNet-18: median of 3"
  echo "  alternating rounds, each its own process timing 3 runs after 1 warm-up; each side in its own process"
  echo
  echo "| workload | kiln ms (MiB for memory) | PyTorch ms (MiB) | kiln / PyTorch (lower is better) |"
  echo "| --- | ---: | ---: | ---: |"
  join -t $'\t' <(grep -v '^#' "$kiln_out" | sort) <(grep -v '^#' "$torch_out" | sort) |
    awk -F'\t' '{ printf "| %s | %.3f | %.3f | %.2f |\n", $1, $2, $4, $2 / $4 }'
  echo
  echo "## Where kiln's time goes"
  echo
  echo "Each CPU kernel of the step timed on its own at the step's shapes (median of 7 runs), times"
  echo "how often the step calls it; allocation, the tape and element-wise adds are not in the sum."
  echo
  echo "$kiln_profile"
  echo
  echo "## Where PyTorch's time goes (torch.profiler, one ResNet-20 step)"
  echo
  echo '```'
  echo "$torch_profile"
  echo '```'
} > "$tmp"
mv "$tmp" "$report"
cat "$report"
