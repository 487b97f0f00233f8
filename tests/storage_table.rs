//! The one table of which primitives a device runs on 16-bit storage without widening:
//! `kiln::cuda::has_16bit_kernels`, derived from the generated kernel table. Checked here against
//! a list written from kernels/*.cu by hand (the `KILN_STORAGE_KERNELS` registrations and the
//! hand-written `relu_*_bf16`/`_f16` kernels), and against the kernel sources themselves, read
//! independently of build.rs.

use std::collections::BTreeSet;
use std::fs;

use kiln::cuda::has_16bit_kernels;

/// The kernels with bf16 and f16 storage twins, by family, as kernels/*.cu registers them.
const NATIVE_16_BIT: &[&str] = &[
    "relu_fwd",
    "relu_bwd",
    "dropout_fwd",
    "dropout_bwd",
    "axpby",
    "bias_grad",
    "im2col",
    "col2im",
    "batch_norm_stats",
    "batch_norm_fwd",
    "batch_norm_bwd_reduce",
    "batch_norm_bwd_dx",
    "maxpool_fwd",
    "maxpool_bwd",
    "avgpool_fwd",
    "avgpool_bwd",
    "global_avgpool_fwd",
    "global_avgpool_bwd",
];

/// Primitives' kernels that exist in f32 only: 16-bit storage is widened for them on every device.
const F32_ONLY: &[&str] = &[
    "leaky_relu_fwd",
    "leaky_relu_bwd",
    "elu_fwd",
    "elu_bwd",
    "sigmoid_fwd",
    "tanh_bwd",
    "softmax_rows_fwd",
    "softmax_cols_bwd",
    "maxout_fwd",
    "mul",
    "affine",
    "fill",
    "sum",
    "count_correct",
    "l2pool_fwd",
    "l2pool_bwd",
    "concat_fwd",
    "concat_bwd",
];

#[test]
fn the_table_holds_exactly_the_kernels_with_16_bit_twins() {
    for op in NATIVE_16_BIT {
        assert!(has_16bit_kernels(op), "{op} has bf16/f16 kernels");
    }
    for op in F32_ONLY {
        assert!(!has_16bit_kernels(op), "{op} has no bf16/f16 kernels");
    }
    assert!(!has_16bit_kernels(""));
    assert!(!has_16bit_kernels("relu"), "a family name is not a kernel");
}

/// Every `X` that kernels/*.cu defines as `X_bf16` and `X_f16` (a `__global__` function or a
/// `KILN_STORAGE_KERNELS(X, ...)` registration), read from the sources with a plain text scan.
fn ops_with_16_bit_kernels_in_sources() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cu") {
            continue;
        }
        let source = fs::read_to_string(&path).unwrap();
        for line in source.lines().map(str::trim) {
            if let Some(rest) = line
                .strip_prefix("KILN_STORAGE_KERNELS_SYNC(")
                .or_else(|| line.strip_prefix("KILN_STORAGE_KERNELS("))
            {
                let op = rest.split(',').next().unwrap().trim();
                names.extend(["bf16", "f16"].map(|s| format!("{op}_{s}")));
            }
            if let Some(rest) = line.split("__global__ void ").nth(1) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
    names
        .iter()
        .filter_map(|n| n.strip_suffix("_bf16"))
        .filter(|op| names.contains(&format!("{op}_f16")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_table_agrees_with_the_kernel_sources() {
    let from_sources = ops_with_16_bit_kernels_in_sources();
    for op in &from_sources {
        assert!(
            has_16bit_kernels(op),
            "{op}: in the sources, not in the table"
        );
    }
    for op in NATIVE_16_BIT {
        assert!(
            from_sources.contains(*op),
            "{op}: not found in kernels/*.cu"
        );
    }
}
