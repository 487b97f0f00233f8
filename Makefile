# Set-up and everyday commands. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
NVCC_DIR = $(shell scripts/setup-cuda.sh)

.PHONY: setup-cuda test train demo kernel-report gpu-bundle gpu-bundle-dryrun bench-cpu bench-cpu-compare bench-gpu-emulated oracle lint

# Installs nvcc 13.0 from pinned PyPI wheels into ~/.cache/kiln (once; quick afterwards).
setup-cuda:
	@scripts/setup-cuda.sh >/dev/null

# Every test, with the kernels compiled by nvcc (the build fails if nvcc is missing or a kernel
# does not compile) and run under emulation against their CPU twins; benches run once as tests.
# With MPI compiled in (OpenMPI installed when missing): tests/distributed.rs runs
# `mpirun -np 2` on the built kiln; the NCCL path is compiled (it runs where a GPU and libnccl are).
TEST_FEATURES = mpi,nccl
test:
	scripts/ensure-mpi.sh
	KILN_NVCC="$(NVCC_DIR)/nvcc" KILN_REQUIRE_NVCC=1 cargo test --all-targets --features $(TEST_FEATURES)
	KILN_NVCC="$(NVCC_DIR)/nvcc" KILN_REQUIRE_NVCC=1 cargo test --doc --features $(TEST_FEATURES)

# The main job: LeNet-5 on Fashion-MNIST (installing the dataset when missing), 10 epochs on the
# best device, all 60,000 training images as in the PyTorch reference; prints the test accuracy.
train:
	scripts/ensure-fashion-mnist.sh
	cargo run --release --bin kiln -- train --model lenet5 --epochs 10 --val-fraction 0 --device auto --out runs/lenet5

# A small convnet trained for a few steps on random data, best device (no dataset needed).
demo:
	cargo run --release --example random_convnet

# ptxas's register, spill and shared-memory report for sm_90, for every kernel.
kernel-report:
	@for f in kernels/*.cu; do \
	  echo "== $$f"; \
	  "$(NVCC_DIR)/nvcc" -arch=sm_90a -cubin -O3 -std=c++17 -Ikernels -Xptxas -v "$$f" -o /dev/null 2>&1 \
	    | grep -E "Compiling entry|registers|spill" | sed 's/^ptxas info    : //'; \
	done

# Release test and bench executables with the kernels embedded, plus run.sh, in dist/gpu-bundle.
gpu-bundle:
	scripts/ensure-fashion-mnist.sh
	KILN_NVCC="$(NVCC_DIR)/nvcc" scripts/gpu-bundle.sh

# The bundle's run.sh on this machine against the kernel emulation, with a planted hang and a
# 120 s budget: the deadline, the TIMEOUT record and the packed evidence are checked.
gpu-bundle-dryrun: gpu-bundle
	scripts/gpu-bundle-dryrun.sh 120

bench-cpu:
	cargo bench --bench cpu_kernels

# kiln's CPU backend against PyTorch on the CPU, same threads, one run (conv layer, LeNet-5 epoch,
# ResNet-20 step with peak resident memory, ResNet-18 at 224, per-kernel profile); report in bench/results/
bench-cpu-compare:
	bench/cpu_compare.sh 2

# Regenerates tests/oracle/values.json with JAX (installed into a throw-away venv).
ORACLE_VENV = $(HOME)/.cache/kiln/oracle-venv
oracle:
	@[ -x "$(ORACLE_VENV)/bin/python" ] || python3 -m venv "$(ORACLE_VENV)"
	@"$(ORACLE_VENV)/bin/python" -c "import jax" 2>/dev/null || "$(ORACLE_VENV)/bin/pip" install -q "jax[cpu]" numpy
	"$(ORACLE_VENV)/bin/python" tests/oracle/generate.py > tests/oracle/values.json.tmp
	mv tests/oracle/values.json.tmp tests/oracle/values.json

# A quick run of the GPU benchmark program on the kernel emulation (no GPU needed).
bench-gpu-emulated:
	KILN_BENCH_DEVICE=emulated cargo bench --bench cuda_kernels

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
