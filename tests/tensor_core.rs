//! The mixed-precision building blocks against the CPU reference on every device under test (the
//! kernel emulation always, a real GPU where one is usable): f32 ⇄ bf16/f16 conversion (bit for
//! bit against the `half` crate) and the tensor-core GEMM (kernels/gemm_tc.cu), whose cases hit
//! partial tiles, every transpose, the 16-byte-load path and batches.

mod tensor_core_support;

use half::{bf16, f16};
use kiln::backend::RawTensor;
use kiln::{backend, ops, DType, Device, GemmSpec, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tensor_core_support::{check_product, grouped_conv_products, random, transposed};

/// The casts' rounding edge values (kiln::testing::rounding_edge_values) and random values at many
/// scales.
fn special_values() -> Vec<f32> {
    let mut v = kiln::testing::rounding_edge_values();
    let mut rng = StdRng::seed_from_u64(7);
    for scale in [1e-6f32, 1e-3, 1.0, 1e3, 6e4, 1e6, 1e30] {
        v.extend((0..257).map(|_| rng.random_range(-1.0f32..1.0) * scale));
    }
    v
}

/// Bits of a 16-bit result, with every NaN made the same (payloads may differ).
fn canonical(bits: u16, is_nan: bool) -> u16 {
    if is_nan {
        0x7fff
    } else {
        bits
    }
}

fn casting_to_bf16_and_f16_rounds_like_the_half_crate_bit_for_bit(device: Device) {
    let x = special_values();
    let n = x.len();
    let expected_bf16: Vec<u16> = x
        .iter()
        .map(|&v| bf16::from_f32(v))
        .map(|h| canonical(h.to_bits(), h.is_nan()))
        .collect();
    let expected_f16: Vec<u16> = x
        .iter()
        .map(|&v| f16::from_f32(v))
        .map(|h| canonical(h.to_bits(), h.is_nan()))
        .collect();
    let xt = Tensor::from_vec(x.clone(), &[n], device).unwrap();
    let got_bf16: Vec<u16> = backend::cast(&xt, DType::BF16)
        .unwrap()
        .to_vec::<bf16>()
        .unwrap()
        .iter()
        .map(|h| canonical(h.to_bits(), h.is_nan()))
        .collect();
    let got_f16: Vec<u16> = backend::cast(&xt, DType::F16)
        .unwrap()
        .to_vec::<f16>()
        .unwrap()
        .iter()
        .map(|h| canonical(h.to_bits(), h.is_nan()))
        .collect();
    for i in 0..n {
        assert_eq!(
            got_bf16[i],
            expected_bf16[i],
            "bf16 of {:e} ({:#010x}) on {device:?}",
            x[i],
            x[i].to_bits()
        );
        assert_eq!(
            got_f16[i],
            expected_f16[i],
            "f16 of {:e} ({:#010x}) on {device:?}",
            x[i],
            x[i].to_bits()
        );
    }
}
kiln::test_device!(
    casting_to_bf16_and_f16_rounds_like_the_half_crate_bit_for_bit,
    gpu
);

fn widening_every_16_bit_pattern_to_f32_is_exact(device: Device) {
    let bf: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
    let hf: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let b = Tensor::from_vec(bf.clone(), &[bf.len()], device).unwrap();
    let h = Tensor::from_vec(hf.clone(), &[hf.len()], device).unwrap();
    let b32 = backend::cast(&b, DType::F32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let h32 = backend::cast(&h, DType::F32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for i in 0..bf.len() {
        assert!(
            same(b32[i], bf[i].to_f32()),
            "bf16 {i:#06x} on {device:?}: {} vs {}",
            b32[i],
            bf[i].to_f32()
        );
        assert!(
            same(h32[i], hf[i].to_f32()),
            "f16 {i:#06x} on {device:?}: {} vs {}",
            h32[i],
            hf[i].to_f32()
        );
    }
}
kiln::test_device!(widening_every_16_bit_pattern_to_f32_is_exact, gpu);

fn tensor_core_gemm_matches_the_cpu_for_every_transpose_and_partial_tiles(device: Device) {
    for (i, dtype) in [DType::BF16, DType::F16].into_iter().enumerate() {
        for (j, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            // Odd sizes: partial 128-tiles, a k that is no multiple of the 32-wide panel or of 8.
            check_product(
                device,
                dtype,
                &transposed(37, 45, 29, ta, tb),
                100 + 10 * i as u64 + j as u64,
            );
        }
    }
}
kiln::test_device!(
    tensor_core_gemm_matches_the_cpu_for_every_transpose_and_partial_tiles,
    gpu
);

fn tensor_core_gemm_16_byte_loads_across_tiles_and_panels(device: Device) {
    for (i, dtype) in [DType::BF16, DType::F16].into_iter().enumerate() {
        // A [m][k] and B [n][k] with k a multiple of 8: both operands take 16-byte loads; m and
        // n just past one 128-tile, k over three panels (the double buffer swaps twice).
        check_product(
            device,
            dtype,
            &transposed(131, 133, 72, false, true),
            200 + i as u64,
        );
    }
}
kiln::test_device!(tensor_core_gemm_16_byte_loads_across_tiles_and_panels, gpu);

fn tensor_core_gemm_batches_with_strides(device: Device) {
    let (m, n, k, batch) = (19, 23, 40, 3);
    // Operand strides larger than one matrix (padding between entries), B shared.
    let spec = transposed(m, n, k, false, true).batched(batch, m * k + 8, 0, m * n + 5);
    check_product(device, DType::BF16, &spec, 300);
}
kiln::test_device!(tensor_core_gemm_batches_with_strides, gpu);

fn tensor_core_gemm_groups_and_sums_over_the_batch(device: Device) {
    // A grouped convolution's three products: 3 images, 2 groups of 5 output channels, 4·9
    // column rows and 7x6 pixels per group (the shapes of GroupedConv's specs).
    for (i, spec) in grouped_conv_products(3, 2, 5, 36, 42).iter().enumerate() {
        check_product(device, DType::BF16, spec, 400 + i as u64);
    }
}
kiln::test_device!(tensor_core_gemm_groups_and_sums_over_the_batch, gpu);

#[test]
fn sixteen_bit_gemm_errors_are_clear() {
    let a = backend::cast(&random(6, 1), DType::BF16).unwrap();
    let b16 = backend::cast(&random(6, 2), DType::F16).unwrap();
    let spec = GemmSpec::new(2, 2, 3);
    // Mixed 16-bit formats, on the CPU and on a device.
    assert!(backend::gemm(&spec, 1.0, &a, &b16, vec![4]).is_err());
    let dev = Device::CudaEmulated;
    let on = |t: &RawTensor| t.to_device(dev).unwrap();
    assert!(backend::gemm(&spec, 1.0, &on(&a), &on(&b16), vec![4]).is_err());
    // A 16-bit operand with an f32 one.
    assert!(backend::gemm(&spec, 1.0, &a, &random(6, 3), vec![4]).is_err());
    // Casts between types that have no conversion.
    let ints = Tensor::from_vec(vec![1i32, 2], &[2], Device::Cpu).unwrap();
    assert!(backend::cast(&ints, DType::BF16).is_err());
    assert!(backend::cast(&on(&random(2, 4)), DType::F64).is_err());
}

fn the_cast_op_passes_gradients_back_in_the_input_type(device: Device) {
    let x = random(11, 5).to_device(device).unwrap().with_grad();
    let y = ops::cast(&ops::cast(&x, DType::BF16).unwrap(), DType::F32).unwrap();
    let loss = ops::sum(&ops::scale(&y, 3.0).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let dx = grads.get(&x).unwrap();
    assert_eq!(dx.dtype(), DType::F32);
    assert_eq!(dx.to_vec::<f32>().unwrap(), vec![3.0; 11]);
}
kiln::test_device!(the_cast_op_passes_gradients_back_in_the_input_type, gpu);
