"""Joins kiln's GPU benchmark (benches/cuda_kernels.rs with KILN_BENCH_JSON, which also holds the
cuBLAS SGEMM rows timed in the same process) and PyTorch's (bench/torch_gpu.py) into one Markdown
table, with the issue's targets, met or not:

    workload | kiln ms | reference ms | ratio kiln/reference | kiln fraction of ceiling | target

- reference: cuBLAS SGEMM in kiln's process where it ran, else PyTorch (cuBLAS/cuDNN/its own kernels).
- ratio kiln/reference: median time over median time; lower is better, 0.5 means kiln takes half the
  time (twice the speed).
- fraction of ceiling (higher is better): memory-bound kernels: achieved GB/s over the 256 MiB
  device-to-device copy's GB/s (kiln's copy, same run); GEMM and convolution: the roofline floor
  max(FLOP / matrix rate, bytes / copy rate) over kiln's time, the matrix rate being cuBLAS's f32
  SGEMM 4096^3 in the same run (PyTorch's torch.mm 4096^3 if cuBLAS did not run).

Usage (the GPU bundle's run.sh does this):
    python3 gpu_report.py --kiln results/kiln.jsonl --torch results/torch.jsonl --out results/gpu-report.md
Reads nvidia-smi for the GPU name and driver, KILN_COMMIT for the commit. Standard library only.
Missing or partial inputs give a report that says what is missing; the exit status is 0 unless the
report can't be written.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys

# The targets: (name, test on a joined row, wanted, what "value" is).
MEMORY_BOUND = ("im2col", "col2im", "maxpool_fwd", "maxpool_bwd", "relu_fwd", "relu_bwd",
                "softmax_xent_fwd", "sum", "sgd_momentum", "adam")


def read_jsonl(path, problems):
    """The JSON objects of a file, one per line; unreadable lines are reported, not fatal."""
    if not path:
        return []
    if not os.path.exists(path):
        problems.append(f"{path}: not found")
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{number}: not JSON ({e})")
    if not records:
        problems.append(f"{path}: no measurements")
    return records


def gpu_info():
    """(name, driver) from nvidia-smi, or why they are unknown."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown (nvidia-smi: {e})", "unknown"
    if out.returncode != 0 or not out.stdout.strip():
        return f"unknown (nvidia-smi exit {out.returncode}: {out.stderr.strip()[:200]})", "unknown"
    first = [f.strip() for f in out.stdout.strip().splitlines()[0].split(",")]
    name = first[0] + (f", {first[2]}, max SM clock {first[3]}" if len(first) >= 4 else "")
    return name, first[1] if len(first) > 1 else "unknown"


def fmt_ms(ms):
    if ms is None:
        return "—"
    return f"{ms:.4f}" if ms < 10 else f"{ms:.2f}"


def sig3(x):
    if x is None:
        return "—"
    if x == 0 or not abs(x) < float("inf"):
        return f"{x:.1f}"
    import math
    decimals = min(max(2 - math.floor(math.log10(abs(x))), 0), 9)
    return f"{x:.{decimals}f}"


# A kiln variant row's name ends in one of these; without it, the name is its default's row.
VARIANT = re.compile(r" (flat-tile|wgmma( tma( wide)?| cp\.async)?|cuda-graph|f32-activations)$")


def plain_name(workload):
    """The workload's name without any variant suffix (the name PyTorch's row has)."""
    while m := VARIANT.search(workload):
        workload = workload[:m.start()]
    return workload


class Joined:
    def __init__(self, kiln, torch):
        by = lambda recs, src=None: {  # noqa: E731
            r["workload"]: r for r in recs
            if "workload" in r and (src is None or r.get("source") == src)}
        self.kiln_meta = by(kiln).get("meta", {})
        self.torch_meta = by(torch).get("meta", {})
        self.kiln = {w: r for w, r in by(kiln, "kiln").items() if w != "meta"}
        self.cublas = by(kiln, "cublas")
        self.torch = {w: r for w, r in by(torch).items() if w != "meta"}
        self.torch_errors = [r for r in torch if "error" in r]
        self.kiln_errors = [r for r in kiln if "error" in r]
        # Ceilings.
        copy = next((r for w, r in self.kiln.items() if w.startswith("copy ") and "ms" in r), None)
        self.copy_gbs = copy["bytes"] / (copy["ms"] * 1e-3) / 1e9 if copy else None
        tcopy = next((r for w, r in self.torch.items() if w.startswith("copy ") and "ms" in r), None)
        self.torch_copy_gbs = tcopy["bytes"] / (tcopy["ms"] * 1e-3) / 1e9 if tcopy else None
        self.square = sorted(
            (int(m.group(1)), w) for w in self.kiln if (m := re.fullmatch(r"sgemm (\d+)x\1x\1", w)))
        largest = self.square[-1][1] if self.square else None
        self.largest_sgemm = largest
        self.matrix_tflops, self.matrix_source = None, None
        for source, table in (("cuBLAS SGEMM", self.cublas), ("PyTorch torch.mm f32", self.torch)):
            r = table.get(largest) if largest else None
            if r and "ms" in r:
                self.matrix_tflops = r["flops"] / (r["ms"] * 1e-3) / 1e12
                self.matrix_source = f"{source} {largest.split()[1]}"
                break
        bf16 = sorted((r["flops"] / (r["ms"] * 1e-3) / 1e12, w) for w, r in self.torch.items()
                      if w.startswith("bf16 gemm") and "ms" in r)
        self.bf16 = bf16[-1] if bf16 else None

    def reference(self, workload):
        """(record, label) of the reference for a workload: cuBLAS in kiln's process first."""
        # kiln's variants (CUDA-graph steps, the opt-in flat-tile and wgmma GEMMs) are measured
        # against the reference of the plain workload's name.
        eager = plain_name(workload)
        for table, label in ((self.cublas, "cuBLAS"), (self.torch, "PyTorch")):
            r = table.get(workload) or table.get(eager)
            if r and "ms" in r:
                return r, label
        return None, None

    def fraction(self, r):
        """(fraction of ceiling, which bound) for a kiln row, or (None, why)."""
        ms = r.get("ms")
        if not ms or r.get("images"):
            return None, ""
        flops, nbytes = r.get("flops", 0.0), r.get("bytes", 0.0)
        floors = []
        if flops and self.matrix_tflops:
            floors.append((flops / (self.matrix_tflops * 1e12) * 1e3, "FLOP"))
        if nbytes and self.copy_gbs:
            floors.append((nbytes / (self.copy_gbs * 1e9) * 1e3, "BW"))
        if not floors:
            return None, "no ceiling"
        floor_ms, bound = max(floors)
        return floor_ms / ms, bound


def target(j, workload, kiln, ref):
    """(target text, verdict) from the issue, or ("—", "") when the issue sets none."""
    kind = workload.split()[0]
    speed = ref["ms"] / kiln["ms"] if ref and kiln and "ms" in kiln else None

    def versus(want, what):
        text = f"speed ≥ {want:g}x {what}"
        if speed is None:
            return text, "no reference"
        return text, f"{'met' if speed >= want else 'NOT met'} ({speed:.2f}x)"

    if workload == j.largest_sgemm:
        return versus(0.90, "cuBLAS")
    if workload.startswith("bf16 gemm"):
        return versus(0.80, "cuBLAS bf16")
    if kind in MEMORY_BOUND:
        frac, _ = j.fraction(kiln)
        text = "≥ 0.85 of copy bandwidth"
        if frac is None:
            return text, "no ceiling"
        return text, f"{'met' if frac >= 0.85 else 'NOT met'} ({frac:.2f})"
    if workload.startswith("conv3x3 fwd+bwd"):
        return versus(0.8, "cuDNN (PyTorch)")
    if workload.startswith("lenet5 train step") and workload.endswith(" cuda-graph"):
        return versus(2.0, "PyTorch eager")
    if workload.startswith("lenet5 train step") and "no-readback" not in workload:
        return "context (the 2x target is the CUDA-graph row's)", ""
    if workload.startswith("resnet20 train step") and " f32" in workload:
        return versus(1.0, "PyTorch eager f32")
    if workload.startswith("resnet20 train step") and " bf16-autocast" in workload:
        return versus(0.8, "PyTorch AMP")
    return "—", ""




def variants(j, smoke):
    """Lines of a table: each opt-in kiln variant (CUDA graph, flat-tile or wgmma GEMM) against the
    default it would replace, in the same run, with what the numbers say to do."""
    lines = []
    for workload, k in j.kiln.items():
        m = VARIANT.search(workload)
        base = j.kiln.get(workload[:m.start()]) if m else None
        if not m or not base or "ms" not in k or "ms" not in base:
            continue
        speedup = base["ms"] / k["ms"]
        if smoke:
            advice = "n/a (smoke run)"
        elif speedup > 1.05:
            advice = "faster: candidate default"
        elif speedup < 0.95:
            advice = "slower: keep opt-in"
        else:
            advice = "same within 5%"
        lines.append(f"| {workload} | {fmt_ms(base['ms'])} | {fmt_ms(k['ms'])} | {speedup:.2f} | {advice} |")
    if not lines:
        return []
    head = ["## Opt-in variants against the defaults", "",
            "Kernels become defaults only after winning here (and passing the GPU parity suites).", "",
            "| variant | default ms | variant ms | speedup (default / variant) | reading |",
            "|---|---:|---:|---:|---|"]
    return head + lines + [""]


def build(j, kiln_path, torch_path, problems):
    gpu, driver = gpu_info()
    commit = os.environ.get("KILN_COMMIT") or j.kiln_meta.get("commit") or "unknown"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# kiln vs cuBLAS / PyTorch on the GPU", ""]
    lines.append(f"- date: {now} (kiln bench {j.kiln_meta.get('date', '—')}, PyTorch {j.torch_meta.get('date', '—')})")
    lines.append(f"- GPU: {gpu}; driver {driver}")
    if j.kiln_meta.get("describe"):
        lines.append(f"- kiln saw: {j.kiln_meta['describe']}")
    lines.append(f"- commit: {commit}")
    if j.kiln_meta.get("emulated") or j.torch_meta.get("smoke"):
        lines.append("- **SMOKE RUN: emulated kiln and/or PyTorch on the CPU at shrunk shapes; these numbers "
                     "measure nothing**")
    lines.append(f"- cuBLAS: {j.kiln_meta.get('cublas', 'no kiln measurements')}")
    if j.torch_meta:
        tm = j.torch_meta
        lines.append(
            f"- PyTorch {tm.get('torch')} (CUDA {tm.get('cuda')}, cuDNN {tm.get('cudnn')}), "
            f"cudnn.benchmark={tm.get('cudnn_benchmark')}, matmul allow_tf32={tm.get('matmul_allow_tf32')}, "
            f"cudnn allow_tf32={tm.get('cudnn_allow_tf32')}")
    else:
        lines.append("- PyTorch: no measurements")
    check = j.torch.get("precision check")
    if check:
        lines.append(f"- precision check (PyTorch vs float64): matmul {check.get('matmul_rel_err', 0):.1e}, "
                     f"conv {check.get('conv_rel_err', 0):.1e}: {check.get('verdict')}")
    runs = j.kiln_meta.get("runs") or j.torch_meta.get("runs") or "—"
    warm = j.kiln_meta.get("warmup") or j.torch_meta.get("warmup") or "—"
    lines.append(f"- method: both sides median of {runs} runs after {warm} warm-up run(s), each run between "
                 "two CUDA events and synchronized (host clock in a smoke run), random inputs; a run "
                 "includes the framework's own launch and allocation overhead")
    lines.append(f"- inputs: {kiln_path or '—'}, {torch_path or '—'}")
    lines.append("")

    lines.append("## Ceilings measured in this run")
    lines.append("")
    lines.append(f"- memory bandwidth (256 MiB device-to-device copy, read + write): kiln {sig3(j.copy_gbs)} GB/s, "
                 f"PyTorch {sig3(j.torch_copy_gbs)} GB/s")
    lines.append(f"- f32 matrix rate: {sig3(j.matrix_tflops)} TFLOP/s ({j.matrix_source or 'no SGEMM reference'})")
    if j.bf16:
        lines.append(f"- bf16 matrix rate (tensor cores, for context): {sig3(j.bf16[0])} TFLOP/s "
                     f"(PyTorch {j.bf16[1]})")
    lines.append("")

    lines.append("## Side by side")
    lines.append("")
    lines.append("| workload | kiln ms | reference ms | ratio kiln/reference (time; lower is better) "
                 "| kiln fraction of ceiling (higher is better) | target (issue) | met? |")
    lines.append("|---|---:|---:|---:|---:|---|---|")
    verdicts = []
    seen = set()
    smoke = bool(j.kiln_meta.get("emulated") or j.torch_meta.get("smoke"))
    for workload, k in j.kiln.items():
        if "ms" not in k:
            continue
        seen.add(workload)
        ref, label = j.reference(workload)
        frac, bound = j.fraction(k)
        text, verdict = target(j, workload, k, ref)
        if verdict and smoke:
            verdict = "n/a (smoke run)"
        if verdict:
            verdicts.append((workload, verdict))
        shown = workload + (f" ({sig3(k['images'] / (k['ms'] * 1e-3))} img/s)" if k.get("images") else "")
        ref_text = f"{fmt_ms(ref['ms'])} ({label})" if ref else "—"
        if ref and "rel_err_vs_kiln" in ref:
            ref_text = f"{fmt_ms(ref['ms'])} (cuBLAS; outputs agree to {ref['rel_err_vs_kiln']:.0e})"
        if label == "cuBLAS" and workload in j.torch and "ms" in j.torch[workload]:
            ref_text += f"; PyTorch {fmt_ms(j.torch[workload]['ms'])}"
        ratio = f"{k['ms'] / ref['ms']:.2f}" if ref else "—"
        frac_text = f"{frac:.2f} ({bound})" if frac is not None else "—"
        lines.append(f"| {shown} | {fmt_ms(k['ms'])} | {ref_text} | {ratio} | {frac_text} | {text} | {verdict or '—'} |")

    # PyTorch-only rows, for context.
    for workload, t in j.torch.items():
        if workload in seen or "ms" not in t or workload == "precision check":
            continue
        kiln_text, ratio = "—", "—"
        if workload.startswith("resnet20 train step") and workload.endswith("bf16-autocast"):
            k = j.kiln.get(workload.replace("bf16-autocast", "f32"))
            if k and "ms" in k:
                kiln_text, ratio = f"{fmt_ms(k['ms'])} (f32)", f"{k['ms'] / t['ms']:.2f}"
        extra = ""
        if t.get("flops"):
            extra = f"; {sig3(t['flops'] / (t['ms'] * 1e-3) / 1e12)} TFLOP/s"
        elif t.get("images"):
            extra = f"; {sig3(t['images'] / (t['ms'] * 1e-3))} img/s"
        lines.append(f"| {workload} (PyTorch only{extra}) | {kiln_text} | {fmt_ms(t['ms'])} (PyTorch) | {ratio} | — | — | — |")

    # Peak memory of the ResNet-20 step.
    for workload, k in j.kiln.items():
        if not workload.endswith("peak memory"):
            continue
        t = j.torch.get(workload)
        kb, tb = k.get("peak_bytes"), t.get("peak_bytes") if t else None
        mib = lambda b: f"{b / 2**20:.1f} MiB" if b is not None else "—"  # noqa: E731
        ratio = f"{kb / tb:.2f}" if kb is not None and tb else "—"
        lines.append(f"| {workload} (kiln pool peak; PyTorch max_memory_allocated) | {mib(kb)} | {mib(tb)} "
                     f"| {ratio} | — | — | — |")
    lines.append("")

    lines.extend(variants(j, smoke))

    if smoke:
        verdicts = [(w, "n/a") for w, _ in verdicts]
    met = sum(v.startswith("met") for _, v in verdicts)
    missed = [w for w, v in verdicts if v.startswith("NOT")]
    unmeasured = [w for w, v in verdicts if not v.startswith(("met", "NOT"))]
    lines.append("## Targets")
    lines.append("")
    lines.append(f"- met: {met} of {len(verdicts)}")
    lines.append(f"- not met: {', '.join(missed) if missed else 'none'}")
    if smoke:
        lines.append("- smoke run: targets not judged")
    elif unmeasured:
        lines.append(f"- without a reference or ceiling: {', '.join(unmeasured)}")
    if not j.kiln:
        lines.append("- no kiln measurements: the targets could not be checked")
    lines.append("")

    if j.torch_errors or j.kiln_errors or problems:
        lines.append("## Problems")
        lines.append("")
        for p in problems:
            lines.append(f"- {p}")
        for r in j.kiln_errors:
            lines.append(f"- kiln {r.get('workload')}: {r.get('error')}")
        for r in j.torch_errors:
            lines.append(f"- PyTorch {r.get('workload')}: {r.get('error')}")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", default="results/kiln.jsonl", help="KILN_BENCH_JSON output of bin/cuda_kernels")
    ap.add_argument("--torch", default="results/torch.jsonl", help="--out of torch_gpu.py")
    ap.add_argument("--out", default="results/gpu-report.md")
    args = ap.parse_args()
    problems = []
    kiln = read_jsonl(args.kiln, problems)
    torch = read_jsonl(args.torch, problems)
    report = build(Joined(kiln, torch), args.kiln, args.torch, problems)
    print(report)
    tmp = f"{args.out}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(report + "\n")
        os.replace(tmp, args.out)
    except OSError as e:
        print(f"gpu_report: can't write {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
