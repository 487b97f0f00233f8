#!/usr/bin/env bash
# Builds kiln's test executables and the CUDA kernel benchmark (release, kernels embedded, with the
# cuBLAS comparison: feature bench-cublas) and packs them into dist/gpu-bundle/ with a run.sh and the
# PyTorch comparison scripts (bench/torch_gpu.py, bench/gpu_report.py), for GPU hosts that have a
# driver but no Rust toolchain, no CUDA toolkit and no network.
#
#   scripts/gpu-bundle.sh                         # build dist/gpu-bundle/
#   (carry dist/gpu-bundle/ to the GPU host)
#   bash dist/gpu-bundle/run.sh --out DIR --budget 540   # on the host (scripts/gpu-run.sh)
#
# The binaries load libcuda at run time, so the host needs nothing but the NVIDIA driver (580+);
# libstdc++ is linked statically (KILN_STATIC_LIBSTDCXX), so the host's own may be older than ours.
# The kernels are embedded as SASS for sm_80/sm_90/sm_90a beside the PTX, so no process waits for
# the JIT; sass-resources.txt records their registers, spills and setmaxnreg (cuobjdump, installed
# from pinned wheels into the cache). The executables are packed with xz, which run.sh unpacks with
# Python's tarfile (or tar where xz is installed).
# KILN_REQUIRE_NVCC=1 makes build.rs fail rather than build without PTX (scripts/setup-cuda.sh
# installs nvcc). Idempotent: each run rebuilds the bundle from scratch in a staging folder and
# swaps it in only when it is complete. The bundle must stay under MAX_MIB (default 58) MiB: a GPU call carries 64 MiB in all.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dest="dist/gpu-bundle"
stage="dist/.gpu-bundle.staging"
max_mib="${MAX_MIB:-58}"

for tool in cargo python3 strip tar xz objdump; do
  command -v "$tool" >/dev/null || { echo "gpu-bundle: $tool is needed" >&2; exit 1; }
done

export KILN_REQUIRE_NVCC=1
# The host's libstdc++ may predate ours (GLIBCXX_3.4.29 is GCC 11's): link it into the executables.
export KILN_STATIC_LIBSTDCXX=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "gpu-bundle: building release test executables (kernels required)" >&2
# KILN_BUNDLE_FEATURES=mpi,nccl builds the tests and kiln with MPI and NCCL, for a GPU host that has
# OpenMPI (libmpi is linked, not loaded): tests/distributed.rs then runs the NCCL test at world size 1.
# Without it the distributed suite ships too and prints SKIPPED (no MPI in the build).
features=(${KILN_BUNDLE_FEATURES:+--features "$KILN_BUNDLE_FEATURES"})
cargo test --release --no-run "${features[@]}" --message-format=json-render-diagnostics >"$work/tests.json"
echo "gpu-bundle: building the cuda_kernels benchmark and the kiln command" >&2
cargo bench --no-run --bench cuda_kernels --features bench-cublas \
  --message-format=json-render-diagnostics >"$work/bench.json"
cargo build --release --bin kiln "${features[@]}"

# One "<stable name> <path>" line per executable: tests by target name ("lib" for the library's
# unit tests, "bin-<name>" for a binary's), the benchmark as cuda_kernels.
python3 - "$work/tests.json" "$work/bench.json" "$work/out_dir" >"$work/executables" <<'PY'
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

# Where build.rs left the cubins the release test executables embed (for the SASS report).
with open(sys.argv[1]) as f:
    for line in f:
        if line.startswith("{"):
            msg = json.loads(line)
            if msg.get("reason") == "build-script-executed" and "#kiln@" in msg.get("package_id", ""):
                with open(sys.argv[3], "w") as o:
                    o.write(msg["out_dir"] + "\n")

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
cpu_only=" lib bin-kiln gradcheck oracle data datasets train_infra torch_interop torchvision_models torchvision_interop gpu_run_script layering storage_table fuzz_readers checkpoint_messages run_dir stop_request "
while read -r name exe; do
  if [[ "$cpu_only" == *" $name "* ]]; then
    echo "gpu-bundle: leaving out $name (CPU only)" >&2
    continue
  fi
  # The PTX and cubins nvcc wrote are embedded gzipped, their headers naming kiln-<stem>.ptx and
  # kiln-<stem>.sm_90.cubin (build.rs); a bundle without them would only skip on the GPU.
  for image in kiln-gemm.ptx kiln-gemm.sm_90.cubin kiln-gemm_wgmma.sm_90a.cubin; do
    if ! grep -aq "$image" "$exe"; then
      echo "gpu-bundle: $name does not embed $image" >&2
      exit 1
    fi
  done
  cp "$exe" "$stage/bin/$name"
  strip --strip-all "$stage/bin/$name"
  [ "$name" = cuda_kernels ] || tests+=("$name")
done <"$work/executables"
# run.sh runs the suites in this order, the evidence worth most first (every kernel family, the GEMM
# families, the Hopper and 16-bit paths), then the rest as cargo listed them, and last the suites
# with little GPU work (selftest's suite repeats the selftest step; errors and optim have no GPU half).
first=(parity layout_oracles gemm_kernels tensor_core flat_tensor_core wgmma mixed_activations
  cuda_graph conv_ops pool_ops activation_ops loss_ops norm_ops optim_devices autocast conv_chunks)
last=(selftest errors optim)
{
  for t in "${first[@]}"; do
    if [[ " ${tests[*]} " == *" $t "* ]]; then echo "$t"; fi
  done
  for t in "${tests[@]}"; do
    [[ " ${first[*]} ${last[*]} " == *" $t "* ]] || echo "$t"
  done
  for t in "${last[@]}"; do
    if [[ " ${tests[*]} " == *" $t "* ]]; then echo "$t"; fi
  done
} >"$stage/tests.txt"

# Registers, spills (local memory, stack) and shared memory of every kernel as ptxas built it,
# and whether setmaxnreg survived into the Hopper kernels' SASS (USETMAXREG), from the very cubins
# the executables embed.
out_dir="$(cat "$work/out_dir")"
scripts/sass-report.sh "$out_dir" >"$stage/sass-resources.txt"

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
# What the executables need of the host's C libraries: the highest symbol versions they import.
# libstdc++ must not be among them (it is linked statically).
needs() { { objdump -T "$@" 2>/dev/null || true; } | { grep -o "$needle[0-9.]*" || true; } | sort -u -V | tail -n 1; }
needle=GLIBC_ glibc_needed="$(needs "$stage"/bin/* "$stage/kiln")"
needle=GLIBCXX_ cxx_needed="$(needs "$stage"/bin/* "$stage/kiln")"
if [ -n "$cxx_needed" ]; then
  echo "gpu-bundle: the executables still import libstdc++ ($cxx_needed): static linking failed" >&2
  exit 1
fi
{
  echo "commit: $commit"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
  echo "glibc: needs $glibc_needed or newer (highest symbol version imported)"
  echo "libstdc++: linked statically (no GLIBCXX symbol imported)"
  echo "linked: $(ldd "$stage/kiln" 2>/dev/null | awk '{print $1}' | paste -sd' ' -)"
  echo "rustc: $(rustc --version)"
  echo "cuda_kernels features: bench-cublas (cuBLAS SGEMM beside kiln's GEMM, libcublas loaded at run time)"
  echo "executables:"
  sed 's/^/  /' "$work/executables"
} >"$stage/BUILD_INFO"

# The runner (deadline, per-step caps, summary and packed evidence in --out).
cp scripts/gpu-run.sh "$stage/run.sh"
chmod +x "$stage/run.sh" "$stage/bin/"* "$stage/kiln"
# The executables compress about 4x, and xz's window finds the kernel images every one of them
# embeds: ship them packed (run.sh unpacks them on first use, with Python's tarfile where the host
# has no xz).
tar -C "$stage" -cf - bin kiln | xz -9 -T1 >"$stage/bin.tar.xz"
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
echo "gpu-bundle: $dest is $((size_kib / 1024)) MiB (limit ${max_mib} MiB), commit $commit; run: bash $dest/run.sh --out DIR --budget 540" >&2
