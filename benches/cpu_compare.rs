//! kiln's CPU backend on the workloads `bench/torch_cpu.py` and `bench/torch_resnet20.py` time for
//! PyTorch, measured the same way (median wall time of warm runs), so `bench/cpu_compare.sh` can
//! put them side by side.
//!
//! Modes (the first argument after `--`):
//! - none: the single conv layer, forward and forward+backward;
//! - `resnet20`: a ResNet-20 training step (batch 128, 3x32x32, SGD momentum), then this process's
//!   peak resident memory (run it in its own process, so that peak is the step's);
//! - `resnet18`: torchvision's ResNet-18 forward + cross-entropy + backward (batch 16, 3x224x224,
//!   1000 classes, training mode, no optimizer step), issue 14's CPU target;
//! - `profile`: where a LeNet-5 and a ResNet-20 step spend their time: every CPU kernel of the
//!   step timed on its own at the step's shapes, times how often the step calls it;
//! - `gemm-shapes`: one thread's GEMM throughput on the conv passes' per-image product shapes.
//!
//! Output: one line per workload, `workload<TAB>median_ms<TAB>runs` (`profile`: its own table).
//! Threads: rayon's pool size (set RAYON_NUM_THREADS to match PyTorch's torch.set_num_threads).

// mimalloc keeps freed blocks for reuse: the tensors of each training step are allocated and
// freed again every step, which with the system allocator costs page faults and zeroing
// (and `retain_freed_host_memory` keeps mimalloc from handing them back to the OS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use kiln::core::layout::ChannelLayout;
use kiln::core::shape::GroupedConv;
use kiln::cpu;
use kiln::nn::models::{resnet20, Architecture};
use kiln::nn::Module;
use kiln::optim::Sgd;
use kiln::train::{train_step_with, Precision, StepPrecision};
use kiln::{ops, ConvGeometry, Device, Error, GemmSpec, Tensor, Window2d};

const WARMUP: usize = 5;
const RUNS: usize = 20;

fn median_ms_of(
    warmup: usize,
    runs: usize,
    mut work: impl FnMut() -> kiln::Result<()>,
) -> kiln::Result<f64> {
    for _ in 0..warmup {
        work()?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(kiln::cuda::median(&times))
}

fn median_ms(work: impl FnMut() -> kiln::Result<()>) -> kiln::Result<f64> {
    median_ms_of(WARMUP, RUNS, work)
}

fn conv_layer() -> kiln::Result<()> {
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

/// Peak resident set of this process so far, in MiB (getrusage: ru_maxrss is in KiB on Linux).
fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

const RESNET_BATCH: usize = 128;
const RESNET_WARMUP: usize = 2;
const RESNET_RUNS: usize = 5;

/// A ResNet-20 training step as `kiln train --model resnet20` takes it (forward, cross-entropy,
/// backward, SGD momentum 0.9 with weight decay 5e-4, loss and correct count read back), on
/// random 3x32x32 images; then the peak resident memory of the process.
fn resnet20_step() -> kiln::Result<()> {
    let batch = RESNET_BATCH;
    let mut model = resnet20(3, 10, 1, Device::Cpu)?;
    let x = Tensor::randn(&[batch, 3, 32, 32], 1.0, 41, Device::Cpu)?;
    let labels: Vec<i32> = (0..batch).map(|i| ((i * 7919 + 13) % 10) as i32).collect();
    let y = Tensor::from_vec(labels, &[batch], Device::Cpu)?;
    let params: Vec<Tensor> = model
        .parameters()
        .into_iter()
        .map(|(_, t)| t.clone())
        .collect();
    let mut optimizer = Sgd::new(&params, 0.01, 0.9, 5e-4)?;
    drop(params);
    let mut precision = StepPrecision::new(Precision::F32);
    let mut step = 0;
    let ms = median_ms_of(RESNET_WARMUP, RESNET_RUNS, || {
        step += 1;
        train_step_with(&mut model, &mut optimizer, &x, &y, step, &mut precision)
            .map(drop)
            .map_err(|e| Error::InvalidArgument {
                what: "training step",
                why: e.to_string(),
            })
    })?;
    println!("resnet20 train step b{batch} 3x32x32\t{ms:.1}\t{RESNET_RUNS}");
    println!(
        "resnet20 train step b{batch} peak resident MiB\t{:.1}\t1",
        peak_rss_mib()
    );
    Ok(())
}

/// Seeded N(0, 1) samples.
const RESNET18_BATCH: usize = 16;
const RESNET18_WARMUP: usize = 1;
const RESNET18_RUNS: usize = 3;

/// torchvision's ResNet-18 at its own configuration (3x224x224, 1000 classes), training mode:
/// forward, cross-entropy, backward; the gradients are dropped each run (no optimizer step).
fn resnet18_forward_backward() -> kiln::Result<()> {
    let batch = RESNET18_BATCH;
    let mut model = Architecture::ResNet18.build(3, 224, 1000, 1, Device::Cpu)?;
    let x = Tensor::randn(&[batch, 3, 224, 224], 1.0, 43, Device::Cpu)?;
    let labels: Vec<i32> = (0..batch)
        .map(|i| ((i * 7919 + 13) % 1000) as i32)
        .collect();
    let y = Tensor::from_vec(labels, &[batch], Device::Cpu)?;
    let ms = median_ms_of(RESNET18_WARMUP, RESNET18_RUNS, || {
        let logits = model.forward(&x, kiln::nn::Mode::Train)?;
        ops::softmax_cross_entropy(&logits, &y)?
            .backward()
            .map(drop)
    })?;
    println!("resnet18 forward+backward b{batch} 3x224x224\t{ms:.1}\t{RESNET18_RUNS}");
    Ok(())
}

fn randn(len: usize, seed: u64) -> Vec<f32> {
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// The rows of the profile table: (step, kernel, shape, calls per step, ms per call).
struct Profile {
    rows: Vec<(&'static str, String, String, usize, f64)>,
}

impl Profile {
    fn time(
        &mut self,
        (step, kernel, shape, calls): (&'static str, &str, String, usize),
        mut work: impl FnMut(),
    ) {
        let ms = median_ms_of(2, 7, || {
            work();
            Ok(())
        })
        .unwrap_or(f64::NAN);
        self.rows.push((step, kernel.to_string(), shape, calls, ms));
    }

    /// Forward, input gradient (unless `first`) and weight gradient of one conv layer.
    fn conv(&mut self, step: &'static str, conv: &GroupedConv, calls: usize, first: bool) {
        let g = &conv.geometry;
        let w_len: usize = conv.weight_shape().iter().product();
        let out_len = g.batch * conv.out_channels * g.col_cols();
        let (x, w, dy) = (randn(g.input_len(), 1), randn(w_len, 2), randn(out_len, 3));
        let shape = format!(
            "{}x{}x{}x{} {}x{} s{} {}->{}",
            g.batch,
            g.in_channels,
            g.in_h,
            g.in_w,
            g.kernel_h,
            g.kernel_w,
            g.stride_h,
            g.in_channels,
            conv.out_channels
        );
        let (mut y, mut dx, mut dw) = (vec![0.0; out_len], vec![0.0; x.len()], vec![0.0; w_len]);
        self.time((step, "conv forward", shape.clone(), calls), || {
            cpu::conv::forward(conv, &x, &w, None, &mut y)
        });
        if !first {
            self.time((step, "conv input grad", shape.clone(), calls), || {
                cpu::conv::input_grad(conv, &w, &dy, &mut dx)
            });
        }
        self.time((step, "conv weight grad", shape, calls), || {
            cpu::conv::weight_grad(conv, &x, &dy, &mut dw)
        });
    }

    /// Batch norm forward (statistics and normalization) and backward, ReLU forward and backward
    /// on `[n, c, h, w]`, `relus` ReLUs per batch norm.
    fn norm_relu(&mut self, step: &'static str, [n, c, h, w]: [usize; 4], calls: usize) {
        let layout = ChannelLayout {
            batch: n,
            channels: c,
            plane: h * w,
        };
        let len = n * c * h * w;
        let (x, dy) = (randn(len, 4), randn(len, 5));
        let (mut mean, mut var, gamma, beta) =
            (vec![0.0; c], vec![0.0; c], vec![1.0; c], vec![0.0; c]);
        cpu::norm::batch_norm_stats(&x, layout, &mut mean, &mut var);
        let mut y = vec![0.0; len];
        let shape = format!("{n}x{c}x{h}x{w}");
        self.time((step, "batch norm forward", shape.clone(), calls), || {
            let (mut m, mut v) = (vec![0.0; c], vec![0.0; c]);
            cpu::norm::batch_norm_stats(&x, layout, &mut m, &mut v);
            let norm = cpu::norm::ChannelNorm {
                mean: &m,
                var: &v,
                gamma: &gamma,
                eps: 1e-5,
            };
            cpu::norm::batch_norm_fwd(&x, layout, norm, &beta, &mut y);
        });
        let norm = cpu::norm::ChannelNorm {
            mean: &mean,
            var: &var,
            gamma: &gamma,
            eps: 1e-5,
        };
        let mut dx = vec![0.0; len];
        self.time((step, "batch norm backward", shape.clone(), calls), || {
            let (mut s, mut sx) = (vec![0.0; c], vec![0.0; c]);
            cpu::norm::batch_norm_bwd_reduce(&dy, &x, layout, norm, &mut s, &mut sx);
            let sums = cpu::norm::ChannelSums {
                sum_dy: &s,
                sum_dy_xhat: &sx,
                count: layout.count(),
            };
            cpu::norm::batch_norm_bwd_dx(&dy, &x, layout, norm, sums, true, &mut dx);
        });
        self.relu(step, len, shape, calls);
    }

    fn relu(&mut self, step: &'static str, len: usize, shape: String, calls: usize) {
        let (x, dy) = (randn(len, 6), randn(len, 7));
        let (mut y, mut mask, mut dx) = (vec![0.0; len], vec![0u8; len], vec![0.0; len]);
        self.time((step, "relu forward", shape.clone(), calls), || {
            cpu::activation::relu_fwd(&x, &mut y, &mut mask)
        });
        self.time((step, "relu backward", shape, calls), || {
            cpu::activation::relu_bwd(&dy, &mask, &mut dx)
        });
    }

    fn max_pool(&mut self, step: &'static str, input: [usize; 4], calls: usize) {
        let g = ConvGeometry::new(input, Window2d::square(2, 2, 0), false).expect("2x2 pool");
        let x = randn(g.input_len(), 8);
        let out = g.batch * g.in_channels * g.col_cols();
        let (mut y, mut argmax, mut dx) = (vec![0.0; out], vec![0i32; out], vec![0.0; x.len()]);
        let shape = format!("{}x{}x{}x{}", input[0], input[1], input[2], input[3]);
        self.time((step, "max pool forward", shape.clone(), calls), || {
            cpu::pool::maxpool_fwd(&x, &g, &mut y, &mut argmax)
        });
        let dy = randn(out, 9);
        self.time((step, "max pool backward", shape, calls), || {
            cpu::pool::maxpool_bwd(&dy, &argmax, &g, &mut dx)
        });
    }

    /// A linear layer `[batch, inputs] -> [batch, outputs]`: forward, input and weight gradient.
    fn linear(&mut self, step: &'static str, (batch, inputs, outputs): (usize, usize, usize)) {
        let (x, w, dy) = (
            randn(batch * inputs, 10),
            randn(outputs * inputs, 11),
            randn(batch * outputs, 12),
        );
        let (mut y, mut dx, mut dw) = (
            vec![0.0; batch * outputs],
            vec![0.0; batch * inputs],
            vec![0.0; outputs * inputs],
        );
        let shape = format!("{batch}x{inputs} -> {outputs}");
        self.time((step, "linear fwd+bwd (3 GEMMs)", shape, 1), || {
            let fwd = GemmSpec::new(batch, outputs, inputs).transpose_b();
            cpu::gemm::gemm(&fwd, 1.0, &x, &w, 0.0, &mut y);
            cpu::gemm::gemm(
                &GemmSpec::new(batch, inputs, outputs),
                1.0,
                &dy,
                &w,
                0.0,
                &mut dx,
            );
            let wg = GemmSpec::new(outputs, inputs, batch).transpose_a();
            cpu::gemm::gemm(&wg, 1.0, &dy, &x, 0.0, &mut dw);
        });
    }

    fn sgd(&mut self, step: &'static str, params: usize, tensors: usize) {
        let (mut w, g, mut v) = (randn(params, 13), randn(params, 14), randn(params, 15));
        let per = params.div_ceil(tensors);
        self.time(
            (
                step,
                "sgd momentum update",
                format!("{params} in {tensors} tensors"),
                1,
            ),
            || {
                for ((w, g), v) in w.chunks_mut(per).zip(g.chunks(per)).zip(v.chunks_mut(per)) {
                    cpu::optim::sgd_momentum_update(w, g, v, 0.01, 0.9, 5e-4, false);
                }
            },
        );
    }

    fn print(&self) {
        println!("| step | kernel | shape | calls per step | ms per call | ms per step |");
        println!("| --- | --- | --- | ---: | ---: | ---: |");
        let mut totals: Vec<(&str, f64)> = Vec::new();
        for (step, kernel, shape, calls, ms) in &self.rows {
            println!(
                "| {step} | {kernel} | {shape} | {calls} | {ms:.3} | {:.2} |",
                ms * *calls as f64
            );
            match totals.iter_mut().find(|(s, _)| s == step) {
                Some((_, t)) => *t += ms * *calls as f64,
                None => totals.push((step, ms * *calls as f64)),
            }
        }
        for (step, total) in totals {
            println!("| {step} | **sum of the kernels above** | | | | **{total:.1}** |");
        }
    }
}

fn conv_of(input: [usize; 4], k: usize, kernel: usize, stride: usize, pad: usize) -> GroupedConv {
    GroupedConv {
        geometry: ConvGeometry::new(input, Window2d::square(kernel, stride, pad), false)
            .expect("the profile's conv shapes fit"),
        out_channels: k,
        groups: 1,
    }
}

/// Every kernel of a LeNet-5 step (batch 64, 1x28x28) and a ResNet-20 step (batch 128, 3x32x32)
/// at the step's shapes, with how often the step calls it.
fn profile() {
    let mut p = Profile { rows: Vec::new() };
    let l = "LeNet-5 b64";
    p.conv(l, &conv_of([64, 1, 28, 28], 6, 5, 1, 2), 1, true);
    p.relu(l, 64 * 6 * 28 * 28, "64x6x28x28".into(), 1);
    p.max_pool(l, [64, 6, 28, 28], 1);
    p.conv(l, &conv_of([64, 6, 14, 14], 16, 5, 1, 0), 1, false);
    p.relu(l, 64 * 16 * 10 * 10, "64x16x10x10".into(), 1);
    p.max_pool(l, [64, 16, 10, 10], 1);
    p.linear(l, (64, 400, 120));
    p.linear(l, (64, 120, 84));
    p.linear(l, (64, 84, 10));
    p.sgd(l, 61_706, 10);
    let r = "ResNet-20 b128";
    let n = RESNET_BATCH;
    p.conv(r, &conv_of([n, 3, 32, 32], 16, 3, 1, 1), 1, true);
    p.conv(r, &conv_of([n, 16, 32, 32], 16, 3, 1, 1), 6, false);
    p.conv(r, &conv_of([n, 16, 32, 32], 32, 3, 2, 1), 1, false);
    p.conv(r, &conv_of([n, 16, 32, 32], 32, 1, 2, 0), 1, false);
    p.conv(r, &conv_of([n, 32, 16, 16], 32, 3, 1, 1), 5, false);
    p.conv(r, &conv_of([n, 32, 16, 16], 64, 3, 2, 1), 1, false);
    p.conv(r, &conv_of([n, 32, 16, 16], 64, 1, 2, 0), 1, false);
    p.conv(r, &conv_of([n, 64, 8, 8], 64, 3, 1, 1), 5, false);
    // Batch norms: 7 at 16x32x32 (stem + 6), 7 + 1 shortcut at 32x16x16, likewise at 64x8x8;
    // ReLUs: one per batch norm except the shortcut's (the block's two ReLUs follow bn1 and the
    // add), which the per-shape counts below approximate as one ReLU per batch norm.
    p.norm_relu(r, [n, 16, 32, 32], 7);
    p.norm_relu(r, [n, 32, 16, 16], 7);
    p.norm_relu(r, [n, 64, 8, 8], 7);
    p.sgd(r, 272_474, 65);
    p.print();
}

fn main() {
    kiln::backend::retain_freed_host_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let mode = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    println!("# kiln cpu, {} rayon threads", rayon::current_num_threads());
    let result = match mode {
        None => conv_layer(),
        Some("resnet20") => resnet20_step(),
        Some("resnet18") => resnet18_forward_backward(),
        Some("gemm-shapes") => {
            gemm_shapes();
            Ok(())
        }
        Some("profile") => {
            profile();
            Ok(())
        }
        Some(other) => {
            eprintln!(
                "cpu_compare: unknown mode {other:?} (none, resnet20, resnet18, profile or gemm-shapes)"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("cpu_compare: {e}");
        std::process::exit(1);
    }
}

/// `gemm-shapes`: one thread's GFLOP/s on the per-image products of the conv passes (the evidence
/// for conv::weight_grad's transposed product), and the batch-wide im2col/col2im bandwidth.
fn gemm_shapes() {
    let shapes: [(usize, usize, usize, bool, bool, &str); 7] = [
        (16, 1024, 144, false, false, "fwd w·col"),
        (16, 144, 1024, false, true, "wgrad dy·colT"),
        (144, 16, 1024, false, true, "wgrad col·dyT"),
        (144, 1024, 16, true, false, "dx wT·dy"),
        (32, 256, 288, false, false, "fwd 32ch 16x16"),
        (32, 288, 256, false, true, "wgrad 32ch"),
        (512, 512, 512, false, false, "square"),
    ];
    for (m, n, k, ta, tb, name) in shapes {
        let a = randn(m * k, 1);
        let b = randn(k * n, 2);
        let mut c = vec![0.0f32; m * n];
        let (ars, acs) = if ta { (1, m as isize) } else { (k as isize, 1) };
        let (brs, bcs) = if tb { (1, k as isize) } else { (n as isize, 1) };
        let ms = median_ms_of(3, 20, || {
            // SAFETY: a, b and c hold m·k, k·n and m·n elements, laid out as the strides say.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    acs,
                    ars,
                    b.as_ptr(),
                    bcs,
                    brs,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
            Ok(())
        })
        .unwrap();
        println!(
            "{name} {m}x{n}x{k}: {ms:.3} ms {:.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / ms / 1e6
        );
    }
    for (c, h) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let g = ConvGeometry::new([128, c, h, h], Window2d::square(3, 1, 1), false).unwrap();
        let x = randn(g.input_len(), 3);
        let mut col = vec![0.0f32; g.col_len()];
        let ms = median_ms_of(2, 10, || {
            cpu::im2col::im2col(&x, &g, &mut col);
            Ok(())
        })
        .unwrap();
        println!(
            "im2col batch 128x{c}x{h}x{h}: {ms:.3} ms, {:.1} GB/s written",
            col.len() as f64 * 4.0 / ms / 1e6
        );
        let mut dx = vec![0.0f32; g.input_len()];
        let ms = median_ms_of(2, 10, || {
            cpu::im2col::col2im(&col, &g, &mut dx);
            Ok(())
        })
        .unwrap();
        println!(
            "col2im batch 128x{c}x{h}x{h}: {ms:.3} ms, {:.1} GB/s read",
            col.len() as f64 * 4.0 / ms / 1e6
        );
    }
}
