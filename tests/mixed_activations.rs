//! Mixed precision with 16-bit activations (`kiln::autocast_activations`, `--precision bf16|f16`):
//! every primitive keeps a bf16/f16 input's format and equals the f32 computation rounded once;
//! layers store their outputs in the format; gradients of activations are 16-bit and those of
//! parameters f32; a network agrees between the CPU and every device under test and stays close to
//! its f32 run; and the saved activations take about half the memory.

use std::sync::{Mutex, MutexGuard};

use kiln::backend::{self, BatchNormStats, Factor, ProductFormats, RawTensor};
use kiln::testing::assert_close;
use kiln::{
    autocast, autocast_activations, memory_stats, ops, ConvGeometry, DType, Device, Tensor,
    Window2d,
};

const FORMATS: [DType; 2] = [DType::BF16, DType::F16];

/// The launch counts and the device's memory statistics are process-wide, and `cargo test` runs a
/// file's tests on parallel threads: each test here holds this lock.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Random values (std 1) stored in `format` on `device`.
fn random_in(shape: &[usize], seed: u64, format: DType, device: Device) -> Tensor {
    Tensor::randn(shape, 1.0, seed, Device::Cpu)
        .unwrap()
        .to_dtype(format)
        .unwrap()
        .to_device(device)
        .unwrap()
}

fn values(t: &RawTensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap()
}

/// The primitives a device still computes by widening 16-bit inputs to f32 (and rounding back):
/// those with no storage-templated kernel, none of which the built-in networks use.
const WIDENED_ON_DEVICES: [&str; 9] = [
    "leaky_relu",
    "elu backward",
    "sigmoid",
    "tanh backward",
    "softmax",
    "l2_pool2d",
    "mul",
    "affine",
    "scale by an upstream gradient",
];

/// `f` applied to 16-bit inputs must give a tensor in their format holding exactly `f` applied to
/// the same values in f32, rounded once; on a device, without widening them unless the primitive
/// is one of [`WIDENED_ON_DEVICES`].
fn check_rounded_once(
    name: &str,
    inputs: &[RawTensor],
    f: impl Fn(&[RawTensor]) -> kiln::Result<RawTensor>,
) {
    let format = inputs[0].dtype();
    let wide: Vec<RawTensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F32).unwrap())
        .collect();
    let widening = || {
        kiln::cuda::launch_counts()
            .get("cast_16bit_to_f32")
            .copied()
            .unwrap_or(0)
    };
    let before = widening();
    let narrow = f(inputs).unwrap_or_else(|e| panic!("{name} in {format:?}: {e}"));
    if inputs[0].device() != Device::Cpu && !WIDENED_ON_DEVICES.contains(&name) {
        assert_eq!(
            widening(),
            before,
            "{name} widened its 16-bit inputs on a device"
        );
    }
    assert_eq!(narrow.dtype(), format, "{name}: the output left {format:?}");
    let expected = f(&wide).unwrap().to_dtype(format).unwrap();
    assert_eq!(narrow.shape(), expected.shape(), "{name}");
    assert_same_values(&format!("{name} in {format:?}"), &narrow, &expected);
}

/// `got` holds exactly `want`'s values (NaN matching NaN); else the first difference is reported.
fn assert_same_values(name: &str, got: &RawTensor, want: &RawTensor) {
    let (got, want) = (values(got), values(want));
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let differ = got
        .iter()
        .zip(&want)
        .position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()));
    if let Some(i) = differ {
        panic!(
            "{name}: element {i} is {} but f32 rounded once gives {}",
            got[i], want[i]
        );
    }
}

fn every_primitive_keeps_16_bit_storage_and_rounds_once(device: Device) {
    let _serial = serial();
    for format in FORMATS {
        let shape = [3, 5, 7, 9];
        let pool = ConvGeometry::new(shape, Window2d::square(3, 2, 1), false).unwrap();
        let pooled = [3, 5, pool.out_h, pool.out_w];
        let x = random_in(&shape, 1, format, device);
        let dy = random_in(&shape, 2, format, device);
        let dy_pooled = random_in(&pooled, 3, format, device);
        let upstream = random_in(&[1], 4, format, device);
        let (_, relu_mask) = backend::relu_fwd(&x).unwrap();
        let (_, argmax) = backend::maxpool_fwd(&x, &pool).unwrap();
        let check = |name: &str,
                     inputs: &[&RawTensor],
                     f: &dyn Fn(&[RawTensor]) -> kiln::Result<RawTensor>| {
            eprintln!("{name} on {device} in {format:?}");
            let inputs: Vec<RawTensor> = inputs.iter().map(|&t| t.clone()).collect();
            check_rounded_once(name, &inputs, f);
        };
        check("relu", &[&x], &|t| Ok(backend::relu_fwd(&t[0])?.0));
        check("relu backward", &[&dy], &|t| {
            backend::relu_bwd(&t[0], &relu_mask)
        });
        check("leaky_relu", &[&x], &|t| {
            backend::leaky_relu_fwd(&t[0], 0.1)
        });
        check("elu backward", &[&x, &dy], &|t| {
            backend::elu_bwd(&t[0], &t[1], 0.7)
        });
        check("sigmoid", &[&x], &|t| backend::sigmoid_fwd(&t[0]));
        check("tanh backward", &[&x, &dy], &|t| {
            backend::tanh_bwd(&t[0], &t[1])
        });
        check("softmax", &[&x], &|t| backend::softmax_fwd(&t[0], 1));
        check("max_pool2d", &[&x], &|t| {
            Ok(backend::maxpool_fwd(&t[0], &pool)?.0)
        });
        check("max_pool2d backward", &[&dy_pooled], &|t| {
            backend::maxpool_bwd(&t[0], &argmax, &pool)
        });
        check("avg_pool2d", &[&x], &|t| {
            backend::avgpool_fwd(&t[0], &pool, false)
        });
        check("avg_pool2d backward", &[&dy_pooled], &|t| {
            backend::avgpool_bwd(&t[0], &pool, true)
        });
        check("l2_pool2d", &[&x], &|t| backend::l2pool_fwd(&t[0], &pool));
        check("global_avg_pool2d", &[&x], &|t| {
            backend::global_avgpool_fwd(&t[0])
        });
        check("dropout", &[&x], &|t| {
            Ok(backend::dropout_fwd(&t[0], 0.3, 7)?.0)
        });
        let (_, dropout_mask) = backend::dropout_fwd(&x, 0.3, 7).unwrap();
        check("dropout backward", &[&dy], &|t| {
            backend::dropout_bwd(&t[0], &dropout_mask, 0.3)
        });
        check("add", &[&x, &dy], &|t| backend::add(&t[0], &t[1]));
        check("mul", &[&x, &dy], &|t| backend::mul(&t[0], &t[1]));
        check("affine", &[&x], &|t| backend::affine(&t[0], 0.3, -1.5));
        check("scale by an upstream gradient", &[&x, &upstream], &|t| {
            backend::scale_times(&t[0], Factor::new(0.5, Some(&t[1])))
        });
        let (gamma, beta) = (
            random_in(&[5], 5, DType::F32, device),
            random_in(&[5], 6, DType::F32, device),
        );
        let (mean, var) = backend::batch_norm_stats(&x).unwrap();
        let stats = BatchNormStats {
            mean: &mean,
            var: &var,
            gamma: &gamma,
            eps: 1e-5,
        };
        check("batch norm", &[&x], &|t| {
            backend::batch_norm_fwd(&t[0], &stats, &beta)
        });
        check("batch norm backward", &[&dy, &x], &|t| {
            let grads = backend::batch_norm_bwd(&t[0], &t[1], &stats, true, true)?;
            assert_eq!(grads.dgamma.dtype(), DType::F32, "dγ of an f32 γ");
            Ok(grads.dx.expect("dx was asked for"))
        });
        // The statistics of 16-bit activations are f32, computed from the same values.
        let wide = x.to_dtype(DType::F32).unwrap();
        let (mean32, var32) = backend::batch_norm_stats(&wide).unwrap();
        assert_eq!(mean.dtype(), DType::F32);
        assert_eq!(values(&mean), values(&mean32), "batch norm mean");
        assert_eq!(values(&var), values(&var32), "batch norm variance");
    }
}
kiln::test_device!(every_primitive_keeps_16_bit_storage_and_rounds_once);

/// Parameters of a small residual network: conv 3→8, batch norm, conv 8→8 (bias), linear 8→5. (A
/// bias before batch norm would have a zero gradient: the normalization removes it.)
struct Net {
    w1: Tensor,
    bn: ops::BatchNorm2d,
    w2: Tensor,
    b2: Tensor,
    fc: Tensor,
    fc_b: Tensor,
}

impl Net {
    fn new(device: Device) -> Net {
        let param = |shape: &[usize], seed, std| {
            Tensor::randn(shape, std, seed, Device::Cpu)
                .unwrap()
                .to_device(device)
                .unwrap()
                .with_grad()
        };
        Net {
            w1: param(&[8, 3, 3, 3], 10, 0.3),
            bn: ops::BatchNorm2d::new(8, device).unwrap(),
            w2: param(&[8, 8, 3, 3], 12, 0.15),
            b2: param(&[8], 11, 0.1),
            fc: param(&[5, 8], 13, 0.4),
            fc_b: param(&[5], 14, 0.1),
        }
    }

    fn params(&self) -> [&Tensor; 7] {
        let bn = (&self.bn.gamma, &self.bn.beta);
        [
            &self.w1, bn.0, bn.1, &self.w2, &self.b2, &self.fc, &self.fc_b,
        ]
    }

    /// conv → bn → relu → max-pool → conv → + shortcut → relu → global average → linear:
    /// (logits, the activations along the way).
    fn forward(&mut self, x: &Tensor) -> kiln::Result<(Tensor, Vec<Tensor>)> {
        let same = Window2d::square(3, 1, 1);
        let h1 = ops::conv2d(x, &self.w1, None, same)?;
        let h2 = ops::relu(&self.bn.forward(&h1, true)?)?;
        let h3 = ops::max_pool2d(&h2, Window2d::square(2, 2, 0))?;
        let h4 = ops::conv2d(&h3, &self.w2, Some(&self.b2), same)?;
        let h5 = ops::relu(&ops::add(&h4, &h3)?)?;
        let h6 = ops::flatten(&ops::global_avg_pool2d(&h5)?)?;
        let logits = ops::linear(&h6, &self.fc, Some(&self.fc_b))?;
        Ok((logits, vec![h1, h2, h3, h4, h5, h6]))
    }
}

/// The loss and parameter gradients of one step of [`Net`] on `device`, in `mode`.
fn step(device: Device, mode: Mode) -> (f32, Vec<Vec<f32>>, Vec<DType>) {
    let mut net = Net::new(device);
    let x = Tensor::randn(&[4, 3, 11, 13], 1.0, 20, Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap();
    let labels = Tensor::from_vec(vec![0i32, 3, 1, 4], &[4], Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap();
    let run = |net: &mut Net| -> kiln::Result<(Tensor, Vec<DType>)> {
        let (logits, activations) = net.forward(&x)?;
        let mut dtypes: Vec<DType> = activations.iter().map(|t| t.dtype()).collect();
        dtypes.push(logits.dtype());
        Ok((ops::softmax_cross_entropy(&logits, &labels)?, dtypes))
    };
    let (loss, dtypes) = match mode {
        Mode::F32 => run(&mut net),
        Mode::Products(f) => autocast(f, || run(&mut net)).unwrap(),
        Mode::Activations(f) => autocast_activations(f, || run(&mut net)).unwrap(),
    }
    .unwrap();
    assert_eq!(loss.dtype(), DType::F32, "the loss is computed in f32");
    let grads = loss.backward().unwrap();
    let grads = net
        .params()
        .iter()
        .map(|p| {
            let g = grads.get(p).expect("every parameter gets a gradient");
            assert_eq!(g.dtype(), DType::F32, "parameter gradients stay f32");
            g.to_vec::<f32>().unwrap()
        })
        .collect();
    (loss.to_vec::<f32>().unwrap()[0], grads, dtypes)
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    F32,
    Products(DType),
    Activations(DType),
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn a_network_in_16_bit_activations_agrees_across_devices_and_with_f32(device: Device) {
    let _serial = serial();
    let (f32_loss, f32_grads, f32_dtypes) = step(Device::Cpu, Mode::F32);
    assert!(f32_dtypes.iter().all(|&d| d == DType::F32));
    for format in FORMATS {
        let (cpu_loss, cpu_grads, dtypes) = step(Device::Cpu, Mode::Activations(format));
        assert!(
            dtypes.iter().all(|&d| d == format),
            "every activation and the logits are {format:?}: {dtypes:?}"
        );
        // Close to f32: 16-bit rounding of each activation, not a different computation.
        assert!(
            (cpu_loss - f32_loss).abs() < 2e-2 * f32_loss.abs(),
            "{format:?} loss {cpu_loss} vs f32 {f32_loss}"
        );
        for (i, (g, g32)) in cpu_grads.iter().zip(&f32_grads).enumerate() {
            let c = cosine(g, g32);
            eprintln!("{format:?}: gradient {i} has cosine {c} with f32's");
            // bf16 keeps 8 significant bits, f16 11 (measured: ≥ 0.9985 and ≥ 0.999999).
            let least = if format == DType::BF16 { 0.995 } else { 0.9999 };
            assert!(
                c > least,
                "{format:?}: gradient {i} has cosine {c} with f32's"
            );
        }
        // And the activations' rounding is really there: products-only mode differs.
        let (products_loss, _, product_dtypes) = step(Device::Cpu, Mode::Products(format));
        assert!(product_dtypes.iter().all(|&d| d == DType::F32));
        assert_ne!(
            products_loss, cpu_loss,
            "{format:?}: rounding activations changed nothing"
        );

        if device.is_gpu() {
            let (loss, grads, _) = step(device, Mode::Activations(format));
            eprintln!("{format:?} on {device}: loss {loss} (cpu {cpu_loss})");
            // Sums in other orders can round an activation to the neighbouring 16-bit value.
            assert_close(&[loss], &[cpu_loss], 1e-3, 1e-2);
            for (i, (g, c)) in grads.iter().zip(&cpu_grads).enumerate() {
                let cos = cosine(g, c);
                assert!(
                    cos > 0.999,
                    "{format:?} on {device}: gradient {i} cosine {cos}"
                );
            }
        }
    }
}
kiln::test_device!(a_network_in_16_bit_activations_agrees_across_devices_and_with_f32);

#[test]
fn sixteen_bit_activations_shrink_the_memory_the_backward_pass_keeps() {
    if !kiln::testing::emulation_under_test(
        "sixteen_bit_activations_shrink_the_memory_the_backward_pass_keeps",
    ) {
        return;
    }
    let _serial = serial();
    let device = Device::CudaEmulated;
    // Bytes alive on the device after a forward pass (what the backward pass will read), minus
    // those alive before it.
    let kept = |mode: Mode| -> usize {
        let mut net = Net::new(device);
        let x = Tensor::randn(&[16, 3, 32, 32], 1.0, 30, Device::Cpu)
            .unwrap()
            .to_device(device)
            .unwrap();
        let before = memory_stats(&device).unwrap().live_bytes;
        let (logits, activations) = match mode {
            Mode::Products(f) => autocast(f, || net.forward(&x)).unwrap(),
            Mode::Activations(f) => autocast_activations(f, || net.forward(&x)).unwrap(),
            Mode::F32 => net.forward(&x),
        }
        .unwrap();
        drop(activations); // the tape still holds what backward needs
        let after = memory_stats(&device).unwrap().live_bytes;
        drop(logits);
        after - before
    };
    // The saved float activations (batch norm's and the second convolution's inputs) halve; ReLU's
    // byte masks and max-pooling's i32 argmax stay as they are, so the total shrinks by a third.
    let products = kept(Mode::Products(DType::BF16));
    let activations = kept(Mode::Activations(DType::BF16));
    eprintln!("kept after forward: {products} B with f32 activations, {activations} B with bf16");
    assert!(
        (activations as f64) < 0.7 * products as f64,
        "bf16 activations keep {activations} B, f32 ones {products} B"
    );
}

#[test]
fn losses_widen_16_bit_inputs_and_send_16_bit_gradients_back() {
    let _serial = serial();
    for format in FORMATS {
        let logits = random_in(&[6, 4], 40, format, Device::Cpu).with_grad();
        let labels = Tensor::from_vec(vec![0i32, 1, 2, 3, 0, 1], &[6], Device::Cpu).unwrap();
        let loss = ops::softmax_cross_entropy(&logits, &labels).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        let g = loss.backward().unwrap();
        let g = g.get(&logits).unwrap();
        assert_eq!(g.dtype(), format, "the gradient of a {format:?} tensor");
        // The same as the f32 loss's gradient, rounded once.
        let wide = logits.detach().to_dtype(DType::F32).unwrap().with_grad();
        let loss32 = ops::softmax_cross_entropy(&wide, &labels).unwrap();
        assert_eq!(
            loss.to_vec::<f32>().unwrap(),
            loss32.to_vec::<f32>().unwrap()
        );
        let g32 = loss32.backward().unwrap();
        let expected = g32.get(&wide).unwrap().to_dtype(format).unwrap();
        assert_eq!(values(g), values(&expected));

        let target = random_in(&[6, 4], 41, format, Device::Cpu);
        let mse = ops::mse_loss(&logits, &target).unwrap();
        let g = mse.backward().unwrap();
        assert_eq!(g.get(&logits).unwrap().dtype(), format);
    }
}

fn a_device_runs_16_bit_activations_through_16_bit_kernels(device: Device) {
    let _serial = serial();
    check_16_bit_kernels_run(device);
}
kiln::test_device!(a_device_runs_16_bit_activations_through_16_bit_kernels, gpu);

fn check_16_bit_kernels_run(device: Device) {
    let before = kiln::cuda::launch_counts();
    step(device, Mode::Activations(DType::BF16));
    let after = kiln::cuda::launch_counts();
    let ran = |kernel: &str| {
        after.get(kernel).copied().unwrap_or(0) - before.get(kernel).copied().unwrap_or(0)
    };
    for op in [
        "relu_fwd",
        "relu_bwd",
        "maxpool_fwd",
        "maxpool_bwd",
        "batch_norm_stats",
        "batch_norm_fwd",
        "batch_norm_bwd_reduce",
        "batch_norm_bwd_dx",
        "global_avgpool_fwd",
        "global_avgpool_bwd",
        "axpby",     // the residual sum, and the gradients meeting at the branch
        "im2col",    // the second convolution's columns, forward and for its weight gradient
        "col2im",    // the second convolution's input gradient
        "bias_grad", // of the second convolution and the linear layer, summed in f32
    ] {
        // f32 axpby: batch norm's two running statistics, which stay f32.
        let f32_launches = if op == "axpby" { 2 } else { 0 };
        assert!(ran(&format!("{op}_bf16")) > 0, "{op}_bf16 did not run");
        assert_eq!(
            ran(&format!("{op}_f32")),
            f32_launches,
            "{op}_f32 on bf16 activations"
        );
    }
    // Widening to f32 is left only where f32 is wanted: the logits for the loss.
    assert_eq!(ran("cast_16bit_to_f32"), 1, "bf16 → f32 casts");
    // Rounding to bf16 is left for the three f32 weights (the products' operands, once per step)
    // and the loss's gradient. The layers' outputs and the input gradients come out of the GEMM
    // epilogues and col2im in bf16 already.
    assert_eq!(ran("cast_f32_to_16bit"), 4, "f32 → bf16 casts");
    // The linear layer's bias is added by the GEMM's epilogue.
    assert_eq!(ran("bias_add_f32"), 0, "bias passes after a GEMM");
}

/// The GEMM kernels that can store C in 16 bits, chosen through the kernel policy.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// gemm_tc 128x128 (mma.sync), the default.
    TensorCore,
    /// gemm_tc 16x256 / 32x256 (flat tiles, for products with at most 32 rows).
    Flat,
    /// Hopper wgmma loading with TMA (single products), 128- or 256-wide tiles.
    WgmmaTma { wide: bool },
    /// Hopper wgmma loading with cp.async (batched products: the convolutions).
    WgmmaCpAsync,
}

impl Kernel {
    /// The policy that selects this kernel.
    fn policy(self) -> kiln::cuda::KernelPolicy {
        kiln::cuda::KernelPolicy {
            flat_tiles: matches!(self, Kernel::Flat),
            wgmma: matches!(self, Kernel::WgmmaTma { .. } | Kernel::WgmmaCpAsync),
            wgmma_tma: matches!(self, Kernel::WgmmaTma { .. }),
            wgmma_wide: matches!(self, Kernel::WgmmaTma { wide: true }),
            ..kiln::cuda::KernelPolicy::DEFAULT
        }
    }

    /// The kernel's name for operands in `format`.
    fn name(self, rows: usize, format: DType) -> String {
        let bf16_name = match self {
            Kernel::TensorCore => "gemm_tc_bf16",
            Kernel::Flat if rows <= 16 => "gemm_tc_16x256_bf16",
            Kernel::Flat => "gemm_tc_32x256_bf16",
            Kernel::WgmmaTma { wide: false } => "gemm_wgmma_tma_bf16",
            Kernel::WgmmaTma { wide: true } => "gemm_wgmma_tma_wide_bf16",
            Kernel::WgmmaCpAsync => "gemm_wgmma_bf16",
        };
        match format {
            DType::BF16 => bf16_name.to_string(),
            _ => bf16_name.replace("bf16", "f16"),
        }
    }
}

/// Runs `f` once with `kernel` selected and checks that the kernel ran.
/// The Hopper kernels run only on compute capability 9.0; elsewhere a real GPU falls back to
/// gemm_tc, and the case is skipped with a message (the emulation runs every kernel).
fn with_kernel<R>(
    kernel: Kernel,
    (device, rows, format): (Device, usize, DType),
    f: impl FnOnce() -> R,
) -> Option<R> {
    let name = kernel.name(rows, format);
    let count = || {
        kiln::cuda::launch_counts()
            .get(name.as_str())
            .copied()
            .unwrap_or(0)
    };
    let before = count();
    // The policy's scope ends however `f` does (a failed assertion included).
    let result = kiln::cuda::with_kernel_policy(device, kernel.policy(), f);
    let after = count();
    let hopper_only = matches!(kernel, Kernel::WgmmaTma { .. } | Kernel::WgmmaCpAsync);
    if after == before && hopper_only && device != Device::CudaEmulated {
        eprintln!("{name}: skipped on {device}: not a compute capability 9.0 GPU");
        return None;
    }
    assert!(
        after > before,
        "{name} did not run for {kernel:?} on {device}"
    );
    Some(result)
}

fn every_tensor_core_kernel_stores_16_bit_outputs_rounded_once(device: Device) {
    let _serial = serial();
    check_16_bit_outputs(device);
}
kiln::test_device!(
    every_tensor_core_kernel_stores_16_bit_outputs_rounded_once,
    gpu
);

fn check_16_bit_outputs(device: Device) {
    // Single products (linear layers; the TMA kernels): y = x·Wᵀ + b, rows x 200 by 200 x out
    // (136 outputs pass one 128-wide tile, so the wide tile applies; 19 rows take a flat tile when
    // those are on), with the bias added by the epilogue, and without a bias (the input gradient's
    // product); and a batched one (a convolution's chunk; cp.async): 3x3, 24 → 72 channels over 3
    // images of 8x11 (wgmma copies 8-element chunks: 88 pixels).
    let cases: [(Kernel, usize, usize); 4] = [
        (Kernel::TensorCore, 72, 19),
        (Kernel::Flat, 72, 19),
        (Kernel::WgmmaTma { wide: false }, 72, 40),
        (Kernel::WgmmaTma { wide: true }, 136, 40),
    ];
    for format in FORMATS {
        for (kernel, out, rows) in cases {
            let x = random_in(&[rows, 200], 50, format, device);
            let w = random_in(&[out, 200], 51, format, device);
            let b = random_in(&[out], 56, DType::F32, device);
            let spec = kiln::GemmSpec::new(rows, out, 200).transpose_b();
            let name = format!("{kernel:?} {format:?}");
            let f = Some(format);
            let ran = with_kernel(kernel, (device, rows, format), || {
                let stored = backend::linear_forward(
                    &x,
                    &w,
                    Some(&b),
                    ProductFormats::operands(f).stored_in(f),
                )
                .unwrap();
                let wide =
                    backend::linear_forward(&x, &w, Some(&b), ProductFormats::operands(f)).unwrap();
                let shape = vec![rows, out];
                let unbiased = backend::gemm_mixed(
                    &spec,
                    1.0,
                    &x,
                    &w,
                    shape.clone(),
                    ProductFormats::operands(f).stored_in(f),
                );
                let unbiased_wide =
                    backend::gemm_mixed(&spec, 1.0, &x, &w, shape, ProductFormats::operands(f));
                (stored, wide, unbiased.unwrap(), unbiased_wide.unwrap())
            });
            let Some((stored, wide, unbiased, unbiased_wide)) = ran else {
                continue;
            };
            assert_eq!(stored.dtype(), format, "{name}");
            assert_same_values(&name, &stored, &wide.to_dtype(format).unwrap());
            let no_bias = format!("{name} without a bias");
            assert_same_values(
                &no_bias,
                &unbiased,
                &unbiased_wide.to_dtype(format).unwrap(),
            );
            // And the bias is there: the f32 outputs against the CPU's.
            let on_cpu = |t: &Tensor| t.to_device(Device::Cpu).unwrap();
            let cpu = backend::linear_forward(
                &on_cpu(&x),
                &on_cpu(&w),
                Some(&on_cpu(&b)),
                ProductFormats::operands(f),
            );
            assert_close(&values(&wide), &values(&cpu.unwrap()), 1e-4, 1e-4);
        }
        for kernel in [Kernel::TensorCore, Kernel::Flat, Kernel::WgmmaCpAsync] {
            let out_channels = if matches!(kernel, Kernel::Flat) {
                24
            } else {
                72
            };
            let x = random_in(&[3, 24, 8, 11], 52, format, device);
            let w = random_in(&[out_channels, 24, 3, 3], 53, DType::F32, device);
            let b = random_in(&[out_channels], 54, DType::F32, device);
            let conv = kiln::shape::GroupedConv {
                geometry: ConvGeometry::new([3, 24, 8, 11], Window2d::square(3, 1, 1), false)
                    .unwrap(),
                out_channels,
                groups: 1,
            };
            let name = format!("conv {kernel:?} {format:?}");
            let ran = with_kernel(kernel, (device, out_channels, format), || {
                let f = Some(format);
                let stored = backend::conv_forward(
                    &x,
                    &w,
                    Some(&b),
                    &conv,
                    ProductFormats::operands(f).stored_in(f),
                )
                .unwrap();
                let wide =
                    backend::conv_forward(&x, &w, Some(&b), &conv, ProductFormats::operands(f))
                        .unwrap();
                (stored, wide)
            });
            let Some((stored, wide)) = ran else {
                continue;
            };
            assert_eq!(stored.dtype(), format, "{name}");
            assert_same_values(&name, &stored, &wide.to_dtype(format).unwrap());
            // The input gradient: col2im rounds each pixel's f32 sum once.
            let dy = random_in(&conv.output_shape(), 55, format, device);
            let f = Some(format);
            let stored =
                backend::conv_input_grad(&w, &dy, &conv, ProductFormats::operands(f).stored_in(f))
                    .unwrap();
            let wide =
                backend::conv_input_grad(&w, &dy, &conv, ProductFormats::operands(f)).unwrap();
            assert_eq!(stored.dtype(), format, "{name} input gradient");
            assert_same_values(&name, &stored, &wide.to_dtype(format).unwrap());
        }
    }
}

fn mixed_types_meet_as_pytorch_promotes_them(device: Device) {
    let _serial = serial();
    // A residual block straight on f32 images: its 16-bit branch meets the f32 shortcut in f32,
    // and each side gets its gradient in its own type.
    let x = Tensor::randn(&[2, 4, 6, 5], 1.0, 60, Device::Cpu)
        .unwrap()
        .to_device(device)
        .unwrap()
        .with_grad();
    let mut block = kiln::nn::ResidualBlock::new(4, 4, 1, 61, device).unwrap();
    let mode = kiln::nn::Mode::Train;
    let y = autocast_activations(DType::BF16, || {
        kiln::nn::Module::forward(&mut block, &x, mode)
    })
    .unwrap()
    .unwrap();
    assert_eq!(y.dtype(), DType::F32, "bf16 + f32 meet in f32");
    let grads = ops::sum(&y).unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().dtype(), DType::F32);

    let a = random_in(&[3, 7], 62, DType::BF16, device).with_grad();
    let b = random_in(&[3, 7], 63, DType::F32, device).with_grad();
    let c = random_in(&[3, 7], 64, DType::F16, device).with_grad();
    let sum = ops::add(&ops::mul(&a, &b).unwrap(), &c).unwrap();
    assert_eq!(sum.dtype(), DType::F32);
    let expected = {
        let wide = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        backend::add(&backend::mul(&wide(&a), &b).unwrap(), &wide(&c)).unwrap()
    };
    assert_same_values("bf16 · f32 + f16", &sum, &expected);
    let grads = ops::sum(&sum).unwrap().backward().unwrap();
    for (t, name) in [(&a, "bf16"), (&b, "f32"), (&c, "f16")] {
        assert_eq!(
            grads.get(t).unwrap().dtype(),
            t.dtype(),
            "the {name} input's gradient"
        );
    }

    // Sums and means of 16-bit activations are f32 (a loss or a statistic), so they combine
    // with f32 losses.
    let mean = ops::mean(&a).unwrap();
    assert_eq!(mean.dtype(), DType::F32);
    let total = ops::sum_losses(&[&mean, &ops::mean(&b).unwrap()]).unwrap();
    let grads = total.backward().unwrap();
    assert_eq!(grads.get(&a).unwrap().dtype(), DType::BF16);

    // A linear layer takes a 16-bit input of the other format (through f32, exactly).
    let w = random_in(&[5, 7], 65, DType::F32, device);
    let y = autocast_activations(DType::F16, || ops::linear(&a, &w, None))
        .unwrap()
        .unwrap();
    assert_eq!(y.dtype(), DType::F16);
    let wide = autocast_activations(DType::F16, || {
        ops::linear(&a.to_dtype(DType::F32).unwrap(), &w, None)
    })
    .unwrap()
    .unwrap();
    assert_same_values("linear on bf16 in f16 mode", &y, &wide);

    // Concatenation and slices keep 16-bit values as they are.
    let joined = ops::concat(&[&a, &a], 0).unwrap();
    assert_eq!(joined.dtype(), DType::BF16);
    let back = ops::narrow(&joined, 0, 3, 3).unwrap();
    assert_same_values("concat then narrow", &back, &a.detach());
}
kiln::test_device!(mixed_types_meet_as_pytorch_promotes_them);

fn transposed_convolutions_store_16_bit_activations_and_agree_across_devices(device: Device) {
    let _serial = serial();
    // With and without a bias: without one, col2im writes y in bf16 itself.
    let run = |device: Device, bias: bool| {
        let x = random_in(&[2, 4, 5, 6], 70, DType::BF16, device).with_grad();
        let w = random_in(&[4, 3, 3, 3], 71, DType::F32, device).with_grad();
        let b = random_in(&[3], 72, DType::F32, device).with_grad();
        let window = Window2d::square(3, 2, 1);
        let y = autocast_activations(DType::BF16, || {
            ops::conv_transpose2d(&x, &w, bias.then_some(&b), window, (1, 1), 1)
        })
        .unwrap()
        .unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let weights = random_in(y.shape(), 73, DType::F32, device);
        let grads = ops::sum(&ops::mul(&y, &weights).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let (gx, gw) = (grads.get(&x).unwrap(), grads.get(&w).unwrap());
        assert_eq!((gx.dtype(), gw.dtype()), (DType::BF16, DType::F32));
        (values(&y), values(gx), values(gw))
    };
    for bias in [false, true] {
        let cpu = run(Device::Cpu, bias);
        if device.is_gpu() {
            let dev = run(device, bias);
            // Sums in another order can land a value on the neighbouring bf16 number.
            assert_close(&dev.0, &cpu.0, 1e-2, 1e-2);
            assert_close(&dev.1, &cpu.1, 1e-2, 1e-2);
            assert!(
                cosine(&dev.2, &cpu.2) > 0.9999,
                "weight gradients on {device}"
            );
        }
    }
}
kiln::test_device!(transposed_convolutions_store_16_bit_activations_and_agree_across_devices);
