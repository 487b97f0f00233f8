#!/usr/bin/env bash
# Builds kiln's test executables and the CUDA kernel benchmark (release, kernels embedded, with the
# cuBLAS comparison: feature bench-cublas) and packs them into dist/gpu-bundle/ with a run.sh and the
# PyTorch comparison scripts (bench/torch_gpu.py, bench/gpu_report.py), for GPU hosts that have a
# driver but no Rust toolchain, no CUDA toolkit and no network.
#
#   scripts/gpu-bundle.sh            # build dist/gpu-bundle/
#   (copy dist/gpu-bundle/ to the GPU host)
#   bash gpu-bundle/run.sh           # on the host: tests, compute-sanitizer, benchmarks -> results/
#
# The binaries load libcuda at run time, so the host needs nothing but the NVIDIA driver (580+).
# Where a python3 with PyTorch is installed, run.sh also times PyTorch on the same workloads, lets the
# benchmark load libcublas from PyTorch's pip wheels, and writes results/gpu-report.md side by side.
# KILN_REQUIRE_NVCC=1 makes build.rs fail rather than build without PTX (scripts/setup-cuda.sh
# installs nvcc). Idempotent: each run rebuilds the bundle from scratch in a staging folder and
# swaps it in only when it is complete. The bundle must stay under MAX_MIB (default 60) MiB.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dest="dist/gpu-bundle"
stage="dist/.gpu-bundle.staging"
max_mib="${MAX_MIB:-60}"

for tool in cargo python3 strip tar xz; do
  command -v "$tool" >/dev/null || { echo "gpu-bundle: $tool is needed" >&2; exit 1; }
done

export KILN_REQUIRE_NVCC=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "gpu-bundle: building release test executables (kernels required)" >&2
cargo test --release --no-run --message-format=json-render-diagnostics >"$work/tests.json"
echo "gpu-bundle: building the cuda_kernels benchmark and the kiln command" >&2
cargo bench --no-run --bench cuda_kernels --features bench-cublas \
  --message-format=json-render-diagnostics >"$work/bench.json"
cargo build --release --bin kiln

# One "<stable name> <path>" line per executable: tests by target name ("lib" for the library's
# unit tests, "bin-<name>" for a binary's), the benchmark as cuda_kernels.
python3 - "$work/tests.json" "$work/bench.json" >"$work/executables" <<'PY'
import json, sys

def artifacts(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
                yield msg

found = {}
def add(name, exe):
    if name in found and found[name] != exe:
        sys.exit(f"gpu-bundle: two executables named {name}: {found[name]} and {exe}")
    found[name] = exe

for msg in artifacts(sys.argv[1]):
    if not msg["profile"]["test"]:
        continue  # examples and binaries built alongside, not test harnesses
    target = msg["target"]
    kinds = target["kind"]
    if "test" in kinds:
        add(target["name"], msg["executable"])
    elif "bin" in kinds:
        add("bin-" + target["name"], msg["executable"])
    elif any(k in ("lib", "rlib", "dylib", "cdylib", "staticlib", "proc-macro") for k in kinds):
        add("lib", msg["executable"])
for msg in artifacts(sys.argv[2]):
    if msg["target"]["name"] == "cuda_kernels" and "bench" in msg["target"]["kind"]:
        add("cuda_kernels", msg["executable"])

if "cuda_kernels" not in found:
    sys.exit("gpu-bundle: cargo reported no cuda_kernels executable")
if not any(n != "cuda_kernels" for n in found):
    sys.exit("gpu-bundle: cargo reported no test executables")
for name in sorted(found):
    print(name, found[name])
PY

rm -rf "$stage"
mkdir -p "$stage/bin"
tests=()
# Suites that only exercise the CPU (they run in CI) are left out to keep the bundle small.
cpu_only=" lib bin-kiln gradcheck oracle data train_infra torch_interop "
while read -r name exe; do
  if [[ "$cpu_only" == *" $name "* ]]; then
    echo "gpu-bundle: leaving out $name (CPU only)" >&2
    continue
  fi
  # The PTX nvcc wrote is embedded gzipped, its header naming kiln-<stem>.ptx (build.rs); a bundle
  # without it would only skip on the GPU.
  if ! grep -aq "kiln-gemm.ptx" "$exe"; then
    echo "gpu-bundle: $name has no embedded PTX" >&2
    exit 1
  fi
  cp "$exe" "$stage/bin/$name"
  strip --strip-all "$stage/bin/$name"
  [ "$name" = cuda_kernels ] || tests+=("$name")
done <"$work/executables"
printf '%s\n' "${tests[@]}" >"$stage/tests.txt"

# The PyTorch reference and the side-by-side report (plain python; run.sh skips them without torch).
cp bench/torch_gpu.py bench/gpu_report.py "$stage/"
# The accuracy-target training runs, one model per call (see the script).
cp scripts/train-targets.sh "$stage/"

# The command line and Fashion-MNIST (the GPU hosts have no network), for a real training run.
cp target/release/kiln "$stage/kiln"
strip --strip-all "$stage/kiln"
data_dir="${KILN_DATA:-/usr/share/datasets/fashion-mnist}"
if [ -f "$data_dir/train-images-idx3-ubyte.gz" ]; then
  mkdir -p "$stage/data"
  cp "$data_dir"/*-ubyte.gz "$stage/data/"
else
  echo "gpu-bundle: no Fashion-MNIST in $data_dir (scripts/ensure-fashion-mnist.sh): no training step" >&2
fi

commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
echo "$commit" >"$stage/COMMIT"
{
  echo "commit: $commit"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m)"
  echo "rustc: $(rustc --version)"
  echo "cuda_kernels features: bench-cublas (cuBLAS SGEMM beside kiln's GEMM, libcublas loaded at run time)"
  echo "executables:"
  sed 's/^/  /' "$work/executables"
} >"$stage/BUILD_INFO"

cat >"$stage/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs kiln's bundled tests and kernel benchmarks on this GPU host; results go to results/.
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed.
#
# KILN_EXPECT_GPU=1 (the default when nvidia-smi is present) makes a step that skipped its real-GPU
# work count as failed, so a host whose GPU can't be used never reports all-pass.
# KILN_PYTHON names the python that has PyTorch (default: the first of python3, python that imports
# torch); without one the PyTorch and cuBLAS comparisons are skipped (SKIP lines, not failures).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -d bin ] || tar -xJf bin.tar.xz
mkdir -p results
rm -f results/*.log results/bench.md results/nvidia-smi.txt results/kiln.jsonl results/torch.jsonl \
  results/gpu-report.md
export KILN_COMMIT="$(cat COMMIT)"
export RUST_BACKTRACE=1

echo "== kiln GPU bundle, commit $KILN_COMMIT"
date -u '+%Y-%m-%d %H:%M:%S UTC'
if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | tee results/nvidia-smi.txt || true
  expect_gpu="${KILN_EXPECT_GPU:-1}"
else
  echo "nvidia-smi not found"
  expect_gpu="${KILN_EXPECT_GPU:-0}"
fi

summary=()
failed=0

# record NAME LOG STATUS: a step's line in the summary; GPU skips fail when a GPU is expected.
record() {
  local name="$1" log="$2" rc="$3" skips
  skips="$(grep -cE 'skipping the real-GPU run|cuda_kernels: skipped|torch_gpu: skipped' "$log" || true)"
  if [ "$rc" -ne 0 ]; then
    summary+=("FAIL  $name (exit $rc; $log)")
    failed=1
  elif [ "$skips" -gt 0 ] && [ "$expect_gpu" = 1 ]; then
    summary+=("FAIL  $name (real-GPU work skipped $skips time(s) where a GPU was expected; $log)")
    failed=1
  elif [ "$skips" -gt 0 ]; then
    summary+=("PASS  $name (real-GPU work skipped $skips time(s): no usable GPU; $log)")
  else
    summary+=("PASS  $name ($log)")
  fi
}

while read -r t; do
  [ -n "$t" ] || continue
  log="results/tests-$t.log"
  echo "== test $t"
  rc=0
  "bin/$t" --test-threads=1 --nocapture >"$log" 2>&1 || rc=$?
  grep -E '^test result:' "$log" | sed 's/^/  /' || true
  record "tests $t" "$log" "$rc"
done <tests.txt

echo "== compute-sanitizer memcheck over parity, cuda_graph, wgmma and mixed_activations"
sanitizer="$(command -v compute-sanitizer || true)"
if [ -z "$sanitizer" ]; then
  for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [ -x "$candidate" ]; then sanitizer="$candidate"; break; fi
  done
fi
# parity: every kernel once; cuda_graph: replayed graphs reading and writing their private memory;
# wgmma: the Hopper GEMM's cp.async copies and shared-memory ring (skipped off compute capability 9.0);
# mixed_activations: the 16-bit activation kernels (8-element vector accesses, 16-bit GEMM epilogues).
for suite in parity cuda_graph wgmma mixed_activations; do
  if [ ! -x "bin/$suite" ]; then
    summary+=("FAIL  compute-sanitizer (no bin/$suite in the bundle)")
    failed=1
  elif [ -z "$sanitizer" ]; then
    echo "  compute-sanitizer not found (not on PATH, not in /usr/local/cuda): memcheck of $suite not run"
    summary+=("SKIP  compute-sanitizer memcheck $suite (compute-sanitizer not found)")
  else
    log="results/sanitizer-$suite.log"
    rc=0
    "$sanitizer" --tool memcheck --error-exitcode 1 "bin/$suite" --test-threads=1 --nocapture >"$log" 2>&1 || rc=$?
    grep -E '^test result:|ERROR SUMMARY' "$log" | sed 's/^/  /' || true
    record "compute-sanitizer memcheck $suite" "$log" "$rc"
  fi
done
# Shared-memory races: the wgmma kernel's ring of stages refilled while other warps read it.
if [ -n "$sanitizer" ] && [ -x bin/wgmma ]; then
  log="results/sanitizer-racecheck-wgmma.log"
  rc=0
  "$sanitizer" --tool racecheck --error-exitcode 1 bin/wgmma --test-threads=1 --nocapture >"$log" 2>&1 || rc=$?
  grep -E '^test result:|RACECHECK SUMMARY' "$log" | sed 's/^/  /' || true
  record "compute-sanitizer racecheck wgmma" "$log" "$rc"
fi

echo "== benchmarks"
# A python with PyTorch, for the PyTorch reference and for the libcublas its pip wheels ship.
py=""
for candidate in ${KILN_PYTHON:-} python3 python; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' >/dev/null 2>&1; then
    py="$candidate"
    break
  fi
done
# cudarc dlopens libcublas.so or libcublas.so.<major> from the library path: put the wheel's lib
# folder on it (it also holds libcublasLt), plus a folder with a libcublas.so link to the library.
bench_env=(KILN_BENCH_OUT=results/bench.md KILN_BENCH_JSON=results/kiln.jsonl)
linkdir=""
if [ -z "$py" ]; then
  echo "  no python with PyTorch (\"import torch\" failed with ${KILN_PYTHON:+$KILN_PYTHON, }python3 and python): no PyTorch reference; cuBLAS only if the system has it"
else
  cublas="$("$py" - 2>/dev/null <<'PY' || true
import glob, os, sys
# PyTorch's CUDA wheels: site-packages/nvidia/cu13/lib (CUDA 13) or nvidia/cublas/lib (CUDA 12).
for base in sys.path:
    found = sorted(glob.glob(os.path.join(base or ".", "nvidia", "**", "libcublas.so*"), recursive=True))
    found = [f for f in found if os.path.basename(f).startswith("libcublas.so")]
    if found:
        print(os.path.realpath(found[-1]))
        break
PY
)"
  if [ -n "$cublas" ] && [ -f "$cublas" ]; then
    libdir="$(dirname "$cublas")"
    path="$libdir"
    if [ ! -e "$libdir/libcublas.so" ]; then
      linkdir="$(mktemp -d)"
      ln -s "$cublas" "$linkdir/libcublas.so"
      path="$linkdir:$path"
    fi
    bench_env+=(LD_LIBRARY_PATH="$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    echo "  libcublas for the cuBLAS comparison: $cublas"
  else
    echo "  no libcublas under $py's site-packages/nvidia: cuBLAS only if the system has it"
  fi
fi
log="results/bench.log"
rc=0
env "${bench_env[@]}" bin/cuda_kernels 2>&1 | tee "$log" || rc=$?
record "bench cuda_kernels" "$log" "$rc"
[ -z "$linkdir" ] || rm -rf "$linkdir"
if grep -q '^cuBLAS reference: ' "$log"; then
  summary+=("SKIP  cuBLAS comparison: $(grep -m1 '^cuBLAS reference: ' "$log" | sed 's/^cuBLAS reference: //')")
fi

if [ -z "$py" ]; then
  summary+=("SKIP  PyTorch reference (no python with torch)")
else
  echo "== PyTorch reference ($py)"
  log="results/torch.log"
  rc=0
  "$py" torch_gpu.py --out results/torch.jsonl 2>&1 | tee "$log" || rc=$?
  record "bench torch_gpu" "$log" "$rc"
fi

echo "== side-by-side report"
report_py="${py:-$(command -v python3 || true)}"
if [ -z "$report_py" ]; then
  summary+=("SKIP  gpu report (no python3)")
else
  log="results/gpu-report.log"
  rc=0
  "$report_py" gpu_report.py --kiln results/kiln.jsonl --torch results/torch.jsonl \
    --out results/gpu-report.md >"$log" 2>&1 || rc=$?
  if [ -f results/gpu-report.md ]; then
    sed -n '/^## Side by side/,$p' results/gpu-report.md
  else
    tail -n 5 "$log"
  fi
  record "gpu report (results/gpu-report.md)" "$log" "$rc"
fi

echo "== kiln info"
./kiln info 2>&1 | tee results/info.txt || true

if [ ! -d data ]; then
  summary+=("SKIP  train lenet5 on cuda (no data/ in the bundle)")
elif ! grep -q '^cuda:0:' results/info.txt; then
  summary+=("SKIP  train lenet5 on cuda (no usable GPU: see results/info.txt)")
  [ "$expect_gpu" = 1 ] && failed=1
else
  echo "== LeNet-5 on Fashion-MNIST on the GPU (10 epochs, all 60,000 training images)"
  log="results/train-lenet5-gpu.log"
  rc=0
  ./kiln train --model lenet5 --epochs 10 --val-fraction 0 --device cuda --data data \
    --out results/lenet5-gpu >"$log" 2>&1 || rc=$?
  grep -E 'done|test accuracy' "$log" | sed 's/^/  /' || true
  rm -f results/lenet5-gpu/*.safetensors
  record "train lenet5 on cuda" "$log" "$rc"

  echo "== LeNet-5 on the GPU in bf16 mixed precision (tensor-core products, f32 weights)"
  log="results/train-lenet5-gpu-bf16.log"
  rc=0
  ./kiln train --model lenet5 --epochs 10 --val-fraction 0 --device cuda --precision bf16 \
    --data data --out results/lenet5-gpu-bf16 >"$log" 2>&1 || rc=$?
  grep -E 'done|test accuracy' "$log" | sed 's/^/  /' || true
  rm -f results/lenet5-gpu-bf16/*.safetensors
  record "train lenet5 on cuda, bf16" "$log" "$rc"

  echo "== LeNet-5 on the GPU, each step replayed from a CUDA graph"
  log="results/train-lenet5-gpu-graph.log"
  rc=0
  ./kiln train --model lenet5 --epochs 10 --val-fraction 0 --device cuda --cuda-graph \
    --data data --out results/lenet5-gpu-graph >"$log" 2>&1 || rc=$?
  grep -E 'done|test accuracy' "$log" | sed 's/^/  /' || true
  rm -f results/lenet5-gpu-graph/*.safetensors
  record "train lenet5 on cuda, CUDA graph" "$log" "$rc"
fi

echo
echo "== summary (commit $KILN_COMMIT)"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "  some steps FAILED"
  exit 1
fi
echo "  all steps passed"
RUN
chmod +x "$stage/run.sh" "$stage/bin/"* "$stage/kiln"
# The executables compress about 4x: ship them packed (run.sh unpacks them on first use).
tar -C "$stage" -cJf "$stage/bin.tar.xz" bin kiln
rm -rf "$stage/bin" "$stage/kiln"

size_kib="$(du -sk "$stage" | cut -f1)"
if [ "$size_kib" -gt $((max_mib * 1024)) ]; then
  du -sh "$stage/"* >&2
  echo "gpu-bundle: bundle is $((size_kib / 1024)) MiB, over the ${max_mib} MiB limit" >&2
  exit 1
fi

rm -rf "$dest"
mv "$stage" "$dest"
du -sh "$dest/"* | sed 's/^/  /' >&2
echo "gpu-bundle: $dest is $((size_kib / 1024)) MiB (limit ${max_mib} MiB), commit $commit; run: bash $dest/run.sh" >&2
