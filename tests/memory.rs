//! Device memory: every buffer goes through the caching pool, so training steps after the first
//! make no new device allocation and live memory returns to the parameters' size after each step.

use std::sync::Mutex;

use kiln::nn::{ConvNet, ConvNetConfig};
use kiln::optim::Sgd;
use kiln::{memory_stats, Device, Tensor};

fn batch(device: Device) -> (Tensor, Tensor) {
    let x = Tensor::randn(&[3, 1, 12, 12], 1.0, 9, device).unwrap();
    let y = Tensor::from_vec(vec![1i32, 0, 4], &[3], device).unwrap();
    (x, y)
}

/// Held by every test here: they measure or configure the emulated device, which tests running in
/// parallel in one process (`cargo test`) would otherwise disturb.
static DEVICE: Mutex<()> = Mutex::new(());

fn training_steps_reuse_pooled_memory(device: Device) {
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let config = ConvNetConfig {
        in_channels: 1,
        image_size: 12,
        channels: (3, 5),
        classes: 5,
    };
    let mut net = ConvNet::new(config, 1, device).unwrap();
    let mut sgd = Sgd::new(net.parameters(), 0.01, 0.9, 0.0).unwrap();
    let (x, y) = batch(device);
    net.train_step(&x, &y, |p, g| sgd.step(p, g)).unwrap();
    let after_first = memory_stats(&device).unwrap();
    for _ in 0..20 {
        let loss = net.train_step(&x, &y, |p, g| sgd.step(p, g)).unwrap();
        assert!(loss.scalar().unwrap().is_finite());
    }
    let after_many = memory_stats(&device).unwrap();
    assert_eq!(
        after_many.device_allocations, after_first.device_allocations,
        "steps after the first allocated new device memory: {after_first:?} -> {after_many:?}"
    );
    assert!(after_many.requests > after_first.requests);
    assert_eq!(
        after_many.live_bytes, after_first.live_bytes,
        "live memory grew across steps"
    );
    assert!(after_many.peak_bytes >= after_many.live_bytes);
    assert!(after_many.cached_bytes > 0);
}
kiln::test_device!(training_steps_reuse_pooled_memory, gpu);

#[test]
fn dropping_tensors_returns_their_memory_to_the_pool() {
    if !kiln::testing::emulation_under_test("dropping_tensors_returns_their_memory_to_the_pool") {
        return;
    }
    let _device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::CudaEmulated;
    let before = memory_stats(&device).unwrap();
    let t = Tensor::zeros(&[1000, 37], kiln::DType::F32, device).unwrap();
    let during = memory_stats(&device).unwrap();
    assert!(
        during.live_bytes >= before.live_bytes + 37_000 * 4
            || during.live_bytes > before.live_bytes
    );
    drop(t);
    let after = memory_stats(&device).unwrap();
    assert!(after.live_bytes <= during.live_bytes - 37_000 * 4);
    assert!(after.cached_bytes >= 37_000 * 4);
    assert_eq!(
        memory_stats(&Device::Cpu).unwrap(),
        kiln::MemoryStats::default()
    );
}
