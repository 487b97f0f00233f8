#!/usr/bin/env bash
# The GPU bundle's runner: scripts/gpu-bundle.sh copies it into dist/gpu-bundle/ as run.sh.
#
#   bash run.sh --out DIR [--budget SECONDS] [--device cuda|emulated]
#
# Runs the bundle's evidence in the order of its value, under one deadline (start + budget,
# default 540 s, inside a GPU host's 10-minute command limit):
#   1. selftest    `kiln selftest`: every kernel family once against the CPU, a verdict in seconds
#   2. preflight   nvidia-smi -q, driver, glibc/libstdc++, ldd, tools, torch, `kiln info`, SASS use
#   3. tests-*     each GPU test suite (GPU halves only: KILN_TEST_DEVICES), parity first
#   4. memcheck-*  compute-sanitizer memcheck: parity, 16-bit, CUDA-graph and wgmma suites
#   5. bench-*     the kernel benchmark with cuBLAS, PyTorch/cuDNN on the same workloads, the report
#   6. train-*     LeNet-5 10 epochs on the GPU (the 90% target), a short ResNet-20 timing run, ...
#   7. racecheck   compute-sanitizer racecheck on the wgmma kernels, if time is left
# Every step runs under `timeout` with its own cap, never past the deadline minus a margin, and a
# hang costs only its own step. After each step a line `STEP STATUS SECONDS [counts] [note]`
# (PASS / FAIL / TIMEOUT / SKIP) goes to DIR/summary.txt and to the output, and everything
# gathered so far is packed into DIR/results.tar.gz (a temporary file, then renamed), so DIR never
# holds more than three files and a kill at any moment leaves every finished step's evidence.
# Exit status: 0 when no step failed or timed out.
#
# --device emulated runs the same steps against the kernel emulation on a machine without a GPU
# (`make gpu-bundle-dryrun`). KILN_RUN_SUITE_CAP overrides the per-suite cap (seconds).
set -uo pipefail

usage() {
  echo "usage: bash run.sh --out DIR [--budget SECONDS] [--device cuda|emulated]" >&2
  exit 2
}

bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$bundle/$(basename "${BASH_SOURCE[0]}")"

# ---- step bodies (run as `bash run.sh __step NAME ...` under timeout, in a process group) ----

step_preflight() {
  # Each probe has a few seconds of its own, so one stuck tool cannot eat the step.
  local t="timeout -k 2"
  echo "## date"; date -u '+%Y-%m-%d %H:%M:%S UTC'
  echo "## host"; uname -a; nproc; (free -g || true) 2>&1; df -h . 2>&1 | tail -n 1
  echo "## nvidia-smi"; $t 10 nvidia-smi 2>&1
  $t 10 nvidia-smi -q >"$KILN_RUN_WORK/nvidia-smi-q.txt" 2>&1 && echo "(nvidia-smi -q: nvidia-smi-q.txt)"
  echo "## kiln info (the module loads say whether machine code or the PTX JIT was used)"
  $t 30 ./kiln info 2>&1
  echo "## driver"; cat /proc/driver/nvidia/version 2>&1 | head -n 2
  echo "## glibc"; $t 5 ldd --version 2>&1 | head -n 1
  echo "## libstdc++ on this host (highest GLIBCXX)"
  local so
  so="$( (ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}') || true)"
  if [ -n "$so" ]; then grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$so" | sort -t. -k3 -n -u | tail -n 1; else echo "none found"; fi
  echo "## what the bundle's executables need (BUILD_INFO)"; grep -E '^(glibc|libstdc|linked)' BUILD_INFO 2>&1
  local exe
  exe="bin/$(head -n 1 tests.txt)"
  echo "## ldd $exe"; $t 5 ldd "$exe" 2>&1
  echo "## tools"
  for tool in compute-sanitizer ncu cuobjdump nvdisasm nvcc python3; do
    printf '%s: %s\n' "$tool" "$(command -v "$tool" || find_tool "$tool" || echo 'not found')"
  done
  echo "## SASS registers, spills and setmaxnreg of the embedded cubins (cuobjdump at bundle build time)"
  cat sass-resources.txt 2>&1
  echo "## torch (last: a cold import under gVisor is slow)"
  $t 20 "${KILN_PYTHON:-python3}" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -n 2
  return 0 # facts, not checks: a missing tool is written down above
}

step_selftest() {
  ./kiln selftest --device "$KILN_RUN_KILN_DEVICE" --json "$KILN_RUN_WORK/selftest.jsonl"
}

step_suite() { # NAME: one test executable, GPU halves only
  "bin/$1" --test-threads=1 --nocapture
}

step_sanitizer() { # TOOL NAME
  "$KILN_SANITIZER" --tool "$1" --error-exitcode 1 --print-limit 20 "bin/$2" --test-threads=1 --nocapture
}

step_bench() {
  KILN_BENCH_OUT="$KILN_RUN_WORK/bench.md" KILN_BENCH_JSON="$KILN_RUN_WORK/kiln.jsonl" \
    KILN_BENCH_PROGRESS="$KILN_RUN_WORK/kiln-progress.jsonl" bin/cuda_kernels
}

step_torch() {
  "$KILN_PY" torch_gpu.py --out "$KILN_RUN_WORK/torch.jsonl"
}

step_report() {
  local kiln_rows="$KILN_RUN_WORK/kiln.jsonl"
  # A benchmark cut by its cap left only the rows it finished.
  [ -f "$kiln_rows" ] || kiln_rows="$KILN_RUN_WORK/kiln-progress.jsonl"
  "${KILN_PY:-python3}" gpu_report.py --kiln "$kiln_rows" --torch "$KILN_RUN_WORK/torch.jsonl" \
    --out "$KILN_RUN_WORK/gpu-report.md"
}

step_train() { # NAME kiln-train-flags...
  local name="$1"
  shift
  ./kiln train --data data --out "$KILN_RUN_WORK/$name" "$@"
  local rc=$?
  rm -f "$KILN_RUN_WORK/$name"/*.safetensors # weights are not evidence, and they are large
  return $rc
}

# The tool from a CUDA installation that is not on PATH.
find_tool() {
  local c
  for c in /usr/local/cuda/bin/"$1" /usr/local/cuda/compute-sanitizer/"$1" /opt/nvidia/*/"$1" \
    /usr/local/cuda-*/bin/"$1"; do
    if [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if [ "${1:-}" = __step ]; then
  cd "$bundle" || exit 1
  shift
  name="$1"
  shift
  "step_$name" "$@"
  exit $?
fi

# ---- the driver ----

out=""
budget=540
device=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:-}"; shift 2 ;;
    --budget) budget="${2:-}"; shift 2 ;;
    --device) device="${2:-}"; shift 2 ;;
    -h | --help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$out" ] || { echo "run.sh: --out DIR is needed (the folder that comes back)" >&2; usage; }
[[ "$budget" =~ ^[0-9]+$ ]] && [ "$budget" -ge 30 ] || { echo "run.sh: --budget $budget: whole seconds, at least 30" >&2; exit 2; }
case "$device" in cuda | emulated) ;; *) echo "run.sh: --device $device: cuda or emulated" >&2; exit 2 ;; esac
command -v timeout >/dev/null || { echo "run.sh: timeout (coreutils) is needed" >&2; exit 2; }

start=$(date +%s)
deadline=$((start + budget))
# Seconds kept back at the end for the last packing and the summary.
margin=$((budget / 30 + 5))
min_step=5
suite_cap="${KILN_RUN_SUITE_CAP:-60}"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
summary="$out/summary.txt"
work="$(mktemp -d "${TMPDIR:-/tmp}/kiln-run.XXXXXX")" || exit 2
trap 'rm -rf "$work"' EXIT
cd "$bundle" || exit 2

export KILN_RUN_WORK="$work"
export KILN_COMMIT="$(cat COMMIT 2>/dev/null || echo unknown)"
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
export KILN_EXE="${KILN_EXE:-$bundle/kiln}" # the kiln tests/distributed.rs starts
# A module the driver must JIT (no machine code for this GPU, or KILN_KERNEL_IMAGE=ptx) is compiled
# once and kept here for the following processes.
export CUDA_CACHE_PATH="$bundle/.nv-cache" CUDA_CACHE_MAXSIZE=4294967296
if [ "$device" = cuda ]; then
  export KILN_TEST_DEVICES=cuda KILN_BENCH_DEVICE=cuda:0
  expect_gpu=1
  kiln_device=cuda
else
  export KILN_TEST_DEVICES=emulated KILN_BENCH_DEVICE=emulated
  expect_gpu=0
  kiln_device=emulated
fi
export KILN_RUN_KILN_DEVICE="$kiln_device"
# What a suite, the benchmarks or the selftest print when they could not do their GPU work. On a
# compute capability 9.0 GPU (H100, H200) a skipped Hopper path is such a skip too.
gpu_skip_pattern='skipping the real-GPU run|cuda_kernels: skipped|torch_gpu: skipped'
if [ "$device" = cuda ] &&
  [ "$(timeout 10 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1)" = 9.0 ]; then
  gpu_skip_pattern="$gpu_skip_pattern|not a compute capability 9.0 GPU|needs compute capability 9.0|[1-9][0-9]* skipped\) on cuda"
fi

failures=0
{
  echo "# kiln GPU bundle run: commit $KILN_COMMIT, device $device, budget ${budget}s"
  echo "# started $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname 2>/dev/null || echo '?')"
  echo "# STEP STATUS SECONDS [passed= failed=] [note]"
} >"$summary"
cat "$summary"

# Everything gathered so far into DIR/results.tar.gz, replaced atomically.
pack() {
  cp "$summary" "$work/summary.txt"
  local tmp="$out/.results.tar.gz.tmp"
  if tar -C "$work" --exclude='*.safetensors' -czf "$tmp" . 2>/dev/null ||
    python3 -c 'import sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as t: t.add(sys.argv[2], arcname=".")' "$tmp" "$work"; then
    mv -f "$tmp" "$out/results.tar.gz"
  else
    rm -f "$tmp"
    echo "run.sh: could not pack $work into $out/results.tar.gz" >&2
  fi
}

# record STEP STATUS SECONDS DETAIL
record() {
  local line
  line="$(printf '%-30s %-7s %4ss  %s' "$1" "$2" "$3" "$4")"
  echo "$line" >>"$summary"
  echo "$line"
  case "$2" in FAIL | TIMEOUT) failures=$((failures + 1)) ;; esac
  pack
}

# libtest's counts over a log: "passed=N failed=M", summed over every `test result:` line.
test_counts() {
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i - 1); if ($(i) ~ /^failed;?$/) f += $(i - 1) } n++ }
       END { if (n) printf "passed=%d failed=%d", p, f }' "$1"
}

# The test that was running when a suite was cut: the last `test NAME ...` line without a result.
# A line that already has its result means the suite hung after that test, not in it.
last_test() {
  grep -aE '^test [^ ]+ \.\.\.' "$1" | tail -n 1 |
    sed -E 's/^test ([^ ]+) \.\.\. *(ok|FAILED|ignored)$/after \1/; s/^test ([^ ]+) .*/\1/'
}

# The tests libtest lists as failed (its closing `failures:` block; under --nocapture a failing
# test's `FAILED` comes on a line of its own, after its panic message).
failed_tests() {
  awk '/^failures:$/ { n++; delete names; k = 0; f = 1; next }
       /^test result:/ { f = 0 }
       f && /^    [^ ]+$/ { names[k++] = $1 }
       END { for (i = 0; i < k && i < 4; i++) printf "%s%s", (i ? "," : ""), names[i] }' "$1"
}

# run_step NAME KIND CAP PHASE_END STEP_ARGS...: KIND is tests (libtest counts) or plain.
run_step() {
  local name="$1" kind="$2" cap="$3" phase_end="$4"
  shift 4
  local now left t0 rc status detail log="$work/$name.log"
  now=$(date +%s)
  left=$((deadline - margin - now))
  [ "$phase_end" -lt "$deadline" ] && [ $((phase_end - now)) -lt "$left" ] && left=$((phase_end - now))
  if [ "$left" -lt "$min_step" ]; then
    record "$name" SKIP 0 "no time left before its phase or the deadline"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  t0=$(date +%s)
  # timeout runs the step in a process group of its own; whatever survives it (a child that
  # ignored SIGTERM, a sanitizer's target) is killed with the group, so nothing outlives its step.
  timeout -k 5 "$cap" bash "$self" __step "$@" >"$log" 2>&1 </dev/null &
  local tpid=$!
  wait "$tpid"
  rc=$?
  kill -KILL -- "-$tpid" 2>/dev/null
  local took=$(($(date +%s) - t0))
  detail=""
  if [ "$kind" = tests ]; then
    detail="$(test_counts "$log")"
    local failed_tests
    failed_tests="$(failed_tests "$log")"
    [ -z "$failed_tests" ] || detail="$detail; failed: $failed_tests"
  fi
  if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ "$took" -ge "$cap" ]; }; then
    status=TIMEOUT
    detail="cut at its ${cap}s cap; $detail"
    if [ "$kind" = tests ]; then detail="$detail; running: $(last_test "$log")"; fi
  elif [ "$rc" -ne 0 ]; then
    status=FAIL
    [ "$rc" -gt 128 ] && detail="killed by signal $((rc - 128)); $detail"
    # A crash (no result line) names the test it happened in.
    if [ "$kind" = tests ] && ! grep -aq '^test result:' "$log"; then
      detail="$detail; running: $(last_test "$log")"
    fi
    [ "$kind" = tests ] && [ -n "$detail" ] || detail="$detail; $(grep -avE '^\s*$' "$log" | tail -n 1 | cut -c1-160)"
    detail="exit $rc; $detail"
  elif [ "$expect_gpu" = 1 ] && grep -aqE "$gpu_skip_pattern" "$log"; then
    status=FAIL
    detail="real-GPU work skipped where a GPU was expected: $(grep -aEm1 "$gpu_skip_pattern" "$log" | cut -c1-160); $detail"
  elif [ -n "${KILN_RUN_PASS_NEEDS:-}" ] && ! grep -aqE "$KILN_RUN_PASS_NEEDS" "$log"; then
    status=FAIL
    detail="no line matching '$KILN_RUN_PASS_NEEDS'; $(grep -aE 'ERROR SUMMARY|RACECHECK SUMMARY|Device not supported' "$log" | head -n 1 | cut -c1-160) $detail"
  else
    status=PASS
  fi
  detail="$(echo "$detail" | sed -E 's/^[; ]+//; s/[; ]+$//; s/; ;/;/g')"
  record "$name" "$status" "$took" "$detail"
}

phase_at() { # the end of a phase at this fraction (percent) of the budget
  echo $((start + budget * $1 / 100))
}

# ---- 0. the executables, unpacked once (xz through Python's tarfile, or tar) ----
if [ ! -d bin ]; then
  t0=$(date +%s)
  packed=bin.tar.xz
  [ -f "$packed" ] || packed=bin.tar.gz
  if python3 -c 'import sys, tarfile
safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1]).extractall(".", **safe)' "$packed" 2>"$work/unpack.log" ||
    tar -xf "$packed" 2>>"$work/unpack.log"; then
    record unpack PASS $(($(date +%s) - t0)) "$packed"
  else
    record unpack FAIL $(($(date +%s) - t0)) "$(tail -n 1 "$work/unpack.log")"
  fi
fi

# ---- 1-2. a verdict on every kernel, then the facts of the host ----
run_step selftest plain 90 "$(phase_at 20)" selftest
sed -n '/^verdict\|^kiln selftest/Ip' "$work/selftest.log" | tail -n 2
run_step preflight plain 60 "$(phase_at 28)" preflight

# ---- 3. GPU-vs-CPU parity, suite by suite (tests.txt lists them in order of value) ----
suites_end="$(phase_at 50)"
while read -r suite; do
  [ -n "$suite" ] || continue
  cap="$suite_cap"
  case "$suite" in training | cuda_graph) cap=$((suite_cap * 2)) ;; esac
  run_step "tests-$suite" tests "$cap" "$suites_end" suite "$suite"
done <tests.txt

# ---- 4. compute-sanitizer memcheck ----
sanitizer="$(command -v compute-sanitizer || find_tool compute-sanitizer || true)"
sanitizer_off=""
if [ "$device" != cuda ]; then
  sanitizer_off="compute-sanitizer needs a GPU"
elif [ -z "$sanitizer" ]; then
  sanitizer_off="compute-sanitizer not found (PATH, /usr/local/cuda)"
else
  # One short probe: a sandbox (gVisor) may refuse the sanitizer the device, and then every
  # sanitizer step would fail for the host's reason, not ours.
  probe="$(timeout -k 5 60 "$sanitizer" --tool memcheck --error-exitcode 1 ./kiln info 2>&1)"
  if [ $? -ne 0 ] || ! grep -q 'ERROR SUMMARY: 0 errors' <<<"$probe"; then
    sanitizer_off="compute-sanitizer cannot check this host: $(grep -aE 'Device not supported|ERROR|rror' <<<"$probe" | head -n 1 | cut -c1-140)"
    printf '%s\n' "$probe" >"$work/sanitizer-probe.log"
  fi
fi
for suite in parity mixed_activations cuda_graph wgmma; do
  if [ -n "$sanitizer_off" ]; then
    record "memcheck-$suite" SKIP 0 "$sanitizer_off"
  elif [ ! -x "bin/$suite" ]; then
    record "memcheck-$suite" FAIL 0 "no bin/$suite in the bundle"
  else
    KILN_SANITIZER="$sanitizer" KILN_RUN_PASS_NEEDS='ERROR SUMMARY: 0 errors' \
      run_step "memcheck-$suite" tests 90 "$(phase_at 62)" sanitizer memcheck "$suite"
  fi
done

# ---- 5. benchmarks: kiln with cuBLAS, then PyTorch/cuDNN, side by side ----
py=""
for candidate in ${KILN_PYTHON:-} python3 python; do
  if command -v "$candidate" >/dev/null && timeout 30 "$candidate" -c 'import torch' >/dev/null 2>&1; then
    py="$candidate"
    break
  fi
done
# cudarc dlopens libcublas.so: the folder of the one PyTorch's wheels ship, with a libcublas.so link.
libpath="${LD_LIBRARY_PATH:-}"
if [ -n "$py" ]; then
  cublas="$(timeout 30 "$py" -c 'import glob, os, sys
for base in sys.path:
    found = sorted(f for f in glob.glob(os.path.join(base or ".", "nvidia", "**", "libcublas.so*"), recursive=True)
                   if os.path.basename(f).startswith("libcublas.so"))
    if found:
        print(os.path.realpath(found[-1])); break' 2>/dev/null || true)"
  if [ -n "$cublas" ] && [ -f "$cublas" ]; then
    mkdir -p "$work/.cublas" && ln -sf "$cublas" "$work/.cublas/libcublas.so"
    libpath="$work/.cublas:$(dirname "$cublas")${libpath:+:$libpath}"
  fi
fi
LD_LIBRARY_PATH="$libpath" run_step bench-kiln plain 180 "$(phase_at 71)" bench
if grep -aq '^cuBLAS reference: ' "$work/bench-kiln.log" 2>/dev/null; then
  record bench-cublas SKIP 0 "$(grep -am1 '^cuBLAS reference: ' "$work/bench-kiln.log" | cut -c1-160)"
fi
if [ -z "$py" ]; then
  record bench-torch SKIP 0 "no python with torch (python3, python, KILN_PYTHON)"
else
  KILN_PY="$py" run_step bench-torch plain 120 "$(phase_at 80)" torch
fi
KILN_PY="${py:-python3}" run_step bench-report plain 20 "$deadline" report
[ -f "$work/gpu-report.md" ] && sed -n '/^## Side by side/,/^## /p' "$work/gpu-report.md" | head -n 40

# ---- 6. training on the device ----
if [ ! -d data ]; then
  record train-lenet5 SKIP 0 "no data/ in the bundle"
else
  if [ "$device" = cuda ]; then
    short=()
  else # the emulation runs a GPU step on two CPU cores: a few hundred images show the path works
    short=(--limit-train 256)
  fi
  epochs=10
  [ "$device" = cuda ] || epochs=1
  run_step train-lenet5 plain 150 "$(phase_at 93)" train lenet5 --model lenet5 --epochs "$epochs" \
    --val-fraction 0 --device "$kiln_device" ${short[@]+"${short[@]}"}
  grep -aE 'test accuracy' "$work/train-lenet5.log" | tail -n 1
  run_step train-resnet20-timing plain 90 "$(phase_at 93)" train resnet20 --model resnet20 \
    --epochs 1 --limit-train 5000 --val-fraction 0.1 --device "$kiln_device" ${short[@]+"${short[@]}"}
  run_step train-lenet5-bf16 plain 90 "$(phase_at 93)" train lenet5-bf16 --model lenet5 \
    --epochs "$epochs" --val-fraction 0 --precision bf16 --device "$kiln_device" ${short[@]+"${short[@]}"}
  run_step train-lenet5-graph plain 90 "$(phase_at 93)" train lenet5-graph --model lenet5 \
    --epochs "$epochs" --val-fraction 0 --cuda-graph --device "$kiln_device" ${short[@]+"${short[@]}"}
fi

# ---- 7. shared-memory races in the wgmma ring, last ----
left=$((deadline - margin - $(date +%s)))
if [ -n "$sanitizer_off" ]; then
  record racecheck-wgmma SKIP 0 "$sanitizer_off"
elif [ "$left" -lt 60 ]; then
  record racecheck-wgmma SKIP 0 "${left}s left: racecheck needs minutes"
else
  KILN_SANITIZER="$sanitizer" KILN_RUN_PASS_NEEDS='RACECHECK SUMMARY: 0 hazards' \
    run_step racecheck-wgmma tests 300 "$deadline" sanitizer racecheck wgmma
fi

elapsed=$(($(date +%s) - start))
{
  echo "# finished in ${elapsed}s of a ${budget}s budget; $failures step(s) failed or timed out"
} >>"$summary"
pack
echo
echo "== summary ($summary, evidence in $out/results.tar.gz)"
cat "$summary"
[ "$failures" -eq 0 ]
