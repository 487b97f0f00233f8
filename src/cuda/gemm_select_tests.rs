//! [`select_gemm`] on every policy field, capability and threshold, at its exact boundaries;
//! nothing is launched.

use super::*;

const D: KernelPolicy = KernelPolicy::DEFAULT;
const EMU: Capabilities = Capabilities::EMULATED;
const F32: GemmOperands = at(GemmFormat::F32, 0, 0);
const BF16: GemmOperands = at(GemmFormat::Bf16, 0, 0);
const F16: GemmOperands = at(GemmFormat::F16, 0, 0);
const WGMMA: KernelPolicy = KernelPolicy { wgmma: true, ..D };

const fn at(format: GemmFormat, a: u64, b: u64) -> GemmOperands {
    GemmOperands { format, a, b }
}

fn pick(spec: GemmSpec, operands: GemmOperands, policy: KernelPolicy) -> GemmKernel {
    select_gemm(&spec, &operands, &policy, &EMU)
}

fn large() -> KernelPolicy {
    KernelPolicy {
        large_tiles: true,
        ..D
    }
}

fn flat() -> KernelPolicy {
    KernelPolicy {
        flat_tiles: true,
        ..D
    }
}

#[test]
fn the_defaults_take_the_square_tiles_and_mma_sync() {
    for spec in [GemmSpec::new(1, 1, 1), GemmSpec::new(500, 500, 500)] {
        assert_eq!(pick(spec, F32, D), GemmKernel::F32);
        let tc = |bf16| GemmKernel::TensorCore { bf16, flat: None };
        assert_eq!(pick(spec, BF16, D), tc(true));
        assert_eq!(pick(spec, F16, D), tc(false));
    }
}

#[test]
fn large_tiles_need_m_and_n_of_128_and_k_of_8() {
    let big = |m, n, k| pick(GemmSpec::new(m, n, k), F32, large());
    assert_eq!(big(128, 128, 8), GemmKernel::F32Large);
    assert_eq!(big(127, 128, 8), GemmKernel::F32);
    assert_eq!(big(128, 127, 8), GemmKernel::F32);
    assert_eq!(big(128, 128, 7), GemmKernel::F32);
    // Off by default; misaligned operands do not matter to the f32 kernels.
    assert_eq!(pick(GemmSpec::new(128, 128, 8), F32, D), GemmKernel::F32);
    let misaligned = at(GemmFormat::F32, 4, 12);
    let spec = GemmSpec::new(129, 131, 9);
    assert_eq!(pick(spec, misaligned, large()), GemmKernel::F32Large);
    // The tensor-core products ignore the f32 choice.
    let tc = pick(GemmSpec::new(128, 128, 8), BF16, large());
    assert_eq!(
        tc,
        GemmKernel::TensorCore {
            bf16: true,
            flat: None
        }
    );
}

#[test]
fn flat_tiles_take_up_to_16_then_up_to_32_rows_but_no_batch_sums() {
    let rows = |m, format| pick(GemmSpec::new(m, 300, 9), format, flat());
    use FlatRows::*;
    assert_eq!(rows(1, F32), GemmKernel::F32Flat(R16));
    assert_eq!(rows(16, F32), GemmKernel::F32Flat(R16));
    assert_eq!(rows(17, F32), GemmKernel::F32Flat(R32));
    assert_eq!(rows(32, F32), GemmKernel::F32Flat(R32));
    assert_eq!(rows(33, F32), GemmKernel::F32);
    let tc = |flat| GemmKernel::TensorCore { bf16: false, flat };
    assert_eq!(rows(16, F16), tc(Some(R16)));
    assert_eq!(rows(17, F16), tc(Some(R32)));
    assert_eq!(rows(33, F16), tc(None));
    let summed = GemmSpec::new(16, 300, 9)
        .batched(4, 16 * 9, 9 * 300, 0)
        .summed_over_batch();
    assert_eq!(pick(summed, F32, flat()), GemmKernel::F32);
    assert_eq!(pick(GemmSpec::new(16, 300, 9), F32, D), GemmKernel::F32);
    // Flat tiles keep the 16-bit products with few rows off wgmma.
    let both = KernelPolicy {
        flat_tiles: true,
        ..WGMMA
    };
    assert_eq!(
        pick(GemmSpec::new(32, 256, 64), BF16, both),
        tc_bf16(Some(R32))
    );
    let tma = GemmKernel::Wgmma(WgmmaKernel::Tma {
        bf16: true,
        wide: false,
    });
    assert_eq!(pick(GemmSpec::new(33, 128, 64), BF16, both), tma);
}

fn tc_bf16(flat: Option<FlatRows>) -> GemmKernel {
    GemmKernel::TensorCore { bf16: true, flat }
}

#[test]
fn large_and_flat_tiles_together_each_take_their_products() {
    let both = KernelPolicy {
        flat_tiles: true,
        ..large()
    };
    assert_eq!(
        pick(GemmSpec::new(128, 128, 8), F32, both),
        GemmKernel::F32Large
    );
    let few = pick(GemmSpec::new(32, 128, 8), F32, both);
    assert_eq!(few, GemmKernel::F32Flat(FlatRows::R32));
}

#[test]
fn wgmma_takes_single_products_by_tma_and_the_rest_by_cp_async() {
    let single = GemmSpec::new(64, 128, 64);
    let tma = |bf16, wide| GemmKernel::Wgmma(WgmmaKernel::Tma { bf16, wide });
    let cp = |bf16| GemmKernel::Wgmma(WgmmaKernel::CpAsync { bf16 });
    assert_eq!(pick(single, BF16, WGMMA), tma(true, false));
    assert_eq!(pick(single, F16, WGMMA), tma(false, false));
    assert_eq!(
        pick(single, F32, WGMMA),
        GemmKernel::F32,
        "f32 never takes wgmma"
    );
    let batched = GemmSpec::new(64, 128, 64).batched(2, 64 * 64, 64 * 128, 64 * 128);
    assert_eq!(pick(batched, BF16, WGMMA), cp(true));
    let grouped = GemmSpec::new(64, 128, 64).grouped(2, 64 * 64, 64 * 128, 64 * 128);
    assert_eq!(pick(grouped, F16, WGMMA), cp(false));
    assert_eq!(
        pick(GemmSpec::new(64, 128, 0), BF16, WGMMA),
        cp(true),
        "k = 0"
    );
    let cp_async = KernelPolicy {
        wgmma_tma: false,
        ..WGMMA
    };
    assert_eq!(pick(single, BF16, cp_async), cp(true));
}

#[test]
fn wide_tiles_take_single_tma_products_wider_than_128() {
    let wide = KernelPolicy {
        wgmma_wide: true,
        ..WGMMA
    };
    let tma = |wide| GemmKernel::Wgmma(WgmmaKernel::Tma { bf16: true, wide });
    assert_eq!(pick(GemmSpec::new(64, 128, 64), BF16, wide), tma(false));
    assert_eq!(pick(GemmSpec::new(64, 136, 64), BF16, wide), tma(true));
    assert_eq!(pick(GemmSpec::new(64, 136, 64), BF16, WGMMA), tma(false));
    // Without TMA, or without wgmma, the wide choice changes nothing.
    let cp_async = KernelPolicy {
        wgmma_tma: false,
        ..wide
    };
    let cp = GemmKernel::Wgmma(WgmmaKernel::CpAsync { bf16: true });
    assert_eq!(pick(GemmSpec::new(64, 136, 64), BF16, cp_async), cp);
    let off = KernelPolicy {
        wgmma_wide: true,
        ..D
    };
    assert_eq!(pick(GemmSpec::new(64, 136, 64), BF16, off), tc_bf16(None));
}

#[test]
fn wgmma_needs_whole_16_byte_chunks_of_both_operands() {
    let aligned = GemmSpec::new(64, 128, 64);
    let tma = GemmKernel::Wgmma(WgmmaKernel::Tma {
        bf16: true,
        wide: false,
    });
    assert_eq!(pick(aligned, at(GemmFormat::Bf16, 4096, 8192), WGMMA), tma);
    assert_eq!(
        pick(aligned, at(GemmFormat::Bf16, 4104, 0), WGMMA),
        tc_bf16(None)
    );
    assert_eq!(
        pick(aligned, at(GemmFormat::Bf16, 0, 8200), WGMMA),
        tc_bf16(None)
    );
    // A's contiguous dimension is k (m when transposed), B's n (k when transposed).
    assert_eq!(pick(GemmSpec::new(64, 128, 72), BF16, WGMMA), tma);
    assert_eq!(pick(GemmSpec::new(64, 128, 68), BF16, WGMMA), tc_bf16(None));
    assert_eq!(pick(GemmSpec::new(64, 132, 64), BF16, WGMMA), tc_bf16(None));
    let t = GemmSpec::new(68, 128, 64).transpose_a();
    assert_eq!(pick(t, BF16, WGMMA), tc_bf16(None));
    assert_eq!(
        pick(GemmSpec::new(68, 128, 64), BF16, WGMMA),
        tma,
        "m is not contiguous"
    );
    let t = GemmSpec::new(64, 132, 64).transpose_b();
    assert_eq!(
        pick(t, BF16, WGMMA),
        tma,
        "n is not contiguous in a transposed B"
    );
    let t = GemmSpec::new(64, 128, 68).transpose_b().transpose_a();
    assert_eq!(pick(t, BF16, WGMMA), tc_bf16(None));
    // Batch and group strides in whole chunks too.
    let cp = GemmKernel::Wgmma(WgmmaKernel::CpAsync { bf16: true });
    let batched = |sa, sb| GemmSpec::new(64, 128, 64).batched(2, sa, sb, 64 * 128);
    assert_eq!(pick(batched(8, 16), BF16, WGMMA), cp);
    assert_eq!(pick(batched(12, 16), BF16, WGMMA), tc_bf16(None));
    assert_eq!(pick(batched(8, 12), BF16, WGMMA), tc_bf16(None));
    let grouped = GemmSpec::new(64, 128, 64).grouped(2, 8, 4, 0);
    assert_eq!(pick(grouped, BF16, WGMMA), tc_bf16(None));
}

#[test]
fn wgmma_runs_on_compute_capability_9_0_and_the_emulation_only() {
    let spec = GemmSpec::new(64, 128, 64);
    let on = |caps: Capabilities| select_gemm(&spec, &BF16, &WGMMA, &caps);
    let tma = GemmKernel::Wgmma(WgmmaKernel::Tma {
        bf16: true,
        wide: false,
    });
    assert_eq!(on(Capabilities::EMULATED), tma);
    assert_eq!(on(Capabilities::of_compute_capability(9, 0)), tma);
    for (major, minor) in [(8, 0), (8, 6), (8, 9), (10, 0), (12, 0)] {
        let caps = Capabilities::of_compute_capability(major, minor);
        assert!(!caps.wgmma, "{major}.{minor}");
        assert_eq!(on(caps), tc_bf16(None), "{major}.{minor}");
    }
    // Every other choice is the same on every capability.
    let sm80 = Capabilities::of_compute_capability(8, 0);
    let few = GemmSpec::new(16, 300, 9);
    assert_eq!(
        select_gemm(&few, &F32, &flat(), &sm80),
        GemmKernel::F32Flat(FlatRows::R16)
    );
    let big = GemmSpec::new(128, 128, 8);
    assert_eq!(
        select_gemm(&big, &F32, &large(), &sm80),
        GemmKernel::F32Large
    );
}

#[test]
fn every_kernel_names_a_built_kernel_and_its_tile() {
    use FlatRows::*;
    let names = crate::cuda::kernel_names();
    let cases = [
        (GemmKernel::F32, (64, 64)),
        (GemmKernel::F32Large, (128, 128)),
        (GemmKernel::F32Flat(R16), (16, 256)),
        (GemmKernel::F32Flat(R32), (32, 128)),
        (tc_bf16(None), (128, 128)),
        (tc_bf16(Some(R16)), (16, 256)),
        (
            GemmKernel::TensorCore {
                bf16: false,
                flat: Some(R32),
            },
            (32, 256),
        ),
        (
            GemmKernel::Wgmma(WgmmaKernel::CpAsync { bf16: false }),
            (128, 128),
        ),
        (
            GemmKernel::Wgmma(WgmmaKernel::Tma {
                bf16: true,
                wide: false,
            }),
            (128, 128),
        ),
        (
            GemmKernel::Wgmma(WgmmaKernel::Tma {
                bf16: false,
                wide: true,
            }),
            (128, 256),
        ),
    ];
    for (kernel, tile) in cases {
        assert_eq!(kernel.tile(), tile, "{kernel:?}");
        if crate::cuda::built_with_kernels() {
            assert!(names.contains(&kernel.name()), "{}", kernel.name());
        }
    }
}
