//! kiln's CPU backend on the workloads `bench/torch_cpu.py` times for PyTorch, measured the same
//! way (median wall time of warm runs), so `bench/cpu_compare.sh` can put them side by side.
//!
//! Output: one line per workload, `workload<TAB>median_ms<TAB>runs`.
//! Threads: rayon's pool size (set RAYON_NUM_THREADS to match PyTorch's torch.set_num_threads).

// mimalloc keeps freed blocks for reuse: the tensors of each training step are allocated and
// freed again every step, which with the system allocator costs page faults and zeroing.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use kiln::{ops, Device, Tensor, Window2d};

const WARMUP: usize = 5;
const RUNS: usize = 20;

fn median_ms(mut work: impl FnMut() -> kiln::Result<()>) -> kiln::Result<f64> {
    for _ in 0..WARMUP {
        work()?;
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(kiln::cuda::median(&times))
}

fn run() -> kiln::Result<()> {
    // The single conv layer: N=64, 16→32 channels, 14x14, 3x3, padding 1, with bias.
    let x = Tensor::randn(&[64, 16, 14, 14], 1.0, 1, Device::Cpu)?;
    let w = Tensor::randn(&[32, 16, 3, 3], 0.1, 2, Device::Cpu)?.with_grad();
    let b = Tensor::randn(&[32], 0.1, 3, Device::Cpu)?.with_grad();
    let window = Window2d::square(3, 1, 1);
    let fwd = kiln::no_grad(|| median_ms(|| ops::conv2d(&x, &w, Some(&b), window).map(drop)))?;
    println!("conv 64x16x14x14 3x3 16->32 forward\t{fwd:.3}\t{RUNS}");
    let xg = x.detach().with_grad();
    let fwd_bwd = median_ms(|| {
        let y = ops::conv2d(&xg, &w, Some(&b), window)?;
        ops::sum(&y)?.backward().map(drop)
    })?;
    println!("conv 64x16x14x14 3x3 16->32 forward+backward\t{fwd_bwd:.3}\t{RUNS}");
    Ok(())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("# kiln cpu, {} rayon threads", rayon::current_num_threads());
    if let Err(e) = run() {
        eprintln!("cpu_compare: {e}");
        std::process::exit(1);
    }
}
