//! Trains a small convnet for a few steps on random (but learnable) data on the best device and
//! prints the loss falling. Run: `cargo run --release --example random_convnet [-- --device cpu]`.
//!
//! The data: 28x28 single-channel images whose class is encoded by a bright 7x7 patch at one of ten
//! positions, plus Gaussian noise, so a convnet can learn it in a few dozen steps.

// mimalloc keeps freed blocks for reuse: the tensors of each training step are allocated and
// freed again every step, which with the system allocator costs page faults and zeroing.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use kiln::nn::{ConvNet, ConvNetConfig};
use kiln::optim::Sgd;
use kiln::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const BATCH: usize = 64;
const STEPS: usize = 60;
const SIZE: usize = 28;

fn batch(rng: &mut StdRng, device: Device) -> kiln::Result<(Tensor, Tensor)> {
    let mut pixels = vec![0.0f32; BATCH * SIZE * SIZE];
    let mut labels = vec![0i32; BATCH];
    for (n, label) in labels.iter_mut().enumerate() {
        let class = rng.random_range(0..10usize);
        *label = class as i32;
        let image = &mut pixels[n * SIZE * SIZE..(n + 1) * SIZE * SIZE];
        for p in image.iter_mut() {
            *p = 0.5 * rng.sample::<f32, _>(StandardNormal);
        }
        let (top, left) = ((class / 5) * 14 + 3, (class % 5) * 5 + 1);
        for h in top..top + 7 {
            for w in left..left + 5 {
                image[h * SIZE + w] += 0.5;
            }
        }
    }
    Ok((
        Tensor::from_vec(pixels, &[BATCH, 1, SIZE, SIZE], device)?,
        Tensor::from_vec(labels, &[BATCH], device)?,
    ))
}

fn main() -> kiln::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let device = match args.iter().position(|a| a == "--device") {
        Some(i) => Device::parse(args.get(i + 1).map(String::as_str).unwrap_or("auto"))?,
        None => Device::best(),
    };
    device.check_available()?;
    println!("device: {device}");
    let mut net = ConvNet::new(ConvNetConfig::default(), 7, device)?;
    println!("parameters: {}", net.parameter_count());
    let mut sgd = Sgd::new(net.parameters(), 0.005, 0.9, 0.0)?;
    let mut rng = StdRng::seed_from_u64(42);
    let start = Instant::now();
    let mut first = None;
    let mut last = 0.0;
    for step in 1..=STEPS {
        let (x, y) = batch(&mut rng, device)?;
        let loss = net.train_step(&x, &y, |p, g| sgd.step(p, g))?.scalar()?;
        first.get_or_insert(loss);
        last = loss;
        if step % 10 == 0 || step == 1 {
            println!("step {step:3}  loss {loss:.4}");
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "loss {:.4} -> {:.4} in {STEPS} steps ({:.0} images/s)",
        first.unwrap_or(f64::NAN),
        last,
        (STEPS * BATCH) as f64 / seconds
    );
    let stats = kiln::memory_stats(&device)?;
    if device.is_gpu() {
        println!(
            "device memory: peak {:.1} MiB, {} allocations for {} requests",
            stats.peak_bytes as f64 / (1 << 20) as f64,
            stats.device_allocations,
            stats.requests
        );
    }
    Ok(())
}
