//! The GPU convolution products run in chunks of images (src/backend/conv_gpu.rs). With the
//! column budget forced down to one image, and to two images of a batch of five (a short last
//! chunk), every product (forward, input and weight gradients; grouped, strided, dilated,
//! transposed; f32 and bf16 autocast) still matches the CPU, and a smaller budget lowers the peak
//! device memory by about the batch-wide column buffer it no longer needs.
//!
//! The budget is the kernel policy's `conv_chunk_bytes`, set per test with a scope of the test's
//! own thread.

use std::sync::Mutex;

use kiln::cuda::{with_kernel_policy, KernelPolicy};
use kiln::testing::check_parity;
use kiln::{autocast, ops, DType, Device, Tensor, Window2d};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, seed, Device::Cpu).unwrap()
}

/// Bytes of `images` images' columns for C·KH·KW rows and `pixels` output pixels, in f32.
fn column_bytes(images: usize, rows: usize, pixels: usize) -> usize {
    images * rows * pixels * 4
}

/// Held by every test here: one measures the emulated device's peak memory, which the other,
/// running in parallel in one process (`cargo test`), would otherwise disturb.
static DEVICE: Mutex<()> = Mutex::new(());

fn chunked_products_match_the_cpu(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    // x [5, 6, 9, 8] with 3x3 windows: 54 column rows; stride 2, padding 1 → 5x4 pixels.
    let one_image = column_bytes(1, 54, 20);
    for (budget, what) in [
        (1, "one image per chunk"),
        (2 * one_image, "two images per chunk"),
    ] {
        let policy = KernelPolicy {
            conv_chunk_bytes: budget,
            ..KernelPolicy::DEFAULT
        };
        with_kernel_policy(device, policy, || chunked_products(device, what));
    }
}
kiln::test_device!(chunked_products_match_the_cpu, gpu);

/// Every product kind under the budget in force.
fn chunked_products(device: Device, what: &str) {
    let (atol, rtol) = (1e-4, 1e-4);
    let inputs = [
        randn(&[5, 6, 9, 8], 1),
        randn(&[4, 3, 3, 3], 2),
        randn(&[4], 3),
    ];
    check_parity(what, device, &inputs, atol, rtol, |t| {
        let window = Window2d::square(3, 2, 1).floored();
        ops::conv2d_groups(&t[0], &t[1], Some(&t[2]), window, 2)
    });
    let inputs = [randn(&[5, 3, 7, 6], 4), randn(&[5, 3, 3, 3], 5)];
    check_parity(what, device, &inputs, atol, rtol, |t| {
        let window = Window2d::square(3, 1, 2).with_dilation(2);
        ops::conv2d(&t[0], &t[1], None, window)
    });
    let inputs = [randn(&[5, 4, 4, 3], 6), randn(&[4, 3, 3, 3], 7)];
    check_parity(what, device, &inputs, atol, rtol, |t| {
        let window = Window2d::square(3, 2, 1);
        ops::conv_transpose2d(&t[0], &t[1], None, window, (1, 0), 1)
    });
    let inputs = [randn(&[5, 6, 9, 8], 8), randn(&[4, 6, 3, 3], 9)];
    check_parity(what, device, &inputs, atol, rtol, |t| {
        let window = Window2d::square(3, 1, 1);
        autocast(DType::BF16, || ops::conv2d(&t[0], &t[1], None, window))?
    });
}

#[test]
fn a_smaller_column_budget_lowers_peak_memory() {
    if !kiln::testing::emulation_under_test("a_smaller_column_budget_lowers_peak_memory") {
        return;
    }
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::CudaEmulated;
    // 16 images of 8x16x16 under a 3x3 'same' convolution: 72 rows x 256 pixels of columns each.
    let x = randn(&[16, 8, 16, 16], 10)
        .to_device(device)
        .unwrap()
        .with_grad();
    let w = randn(&[8, 8, 3, 3], 11)
        .to_device(device)
        .unwrap()
        .with_grad();
    let batch_columns = column_bytes(16, 72, 256);
    let peak_with = |budget: usize| {
        let policy = KernelPolicy {
            conv_chunk_bytes: budget,
            ..KernelPolicy::DEFAULT
        };
        kiln::empty_cache(&device).unwrap();
        kiln::reset_peak_memory(&device).unwrap();
        with_kernel_policy(device, policy, || {
            let y = ops::conv2d(&x, &w, None, Window2d::square(3, 1, 1)).unwrap();
            let grads = ops::sum(&y).unwrap().backward().unwrap();
            drop((y, grads));
        });
        kiln::memory_stats(&device).unwrap().peak_bytes
    };
    let whole_batch = peak_with(usize::MAX);
    let one_image = peak_with(column_bytes(1, 72, 256));
    eprintln!("peak: {whole_batch} bytes with one chunk, {one_image} with one image per chunk");
    assert!(
        one_image + batch_columns / 2 < whole_batch,
        "one image per chunk should save most of the {batch_columns}-byte column buffer: \
         {one_image} vs {whole_batch}"
    );
}
