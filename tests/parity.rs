//! GPU-vs-CPU parity: every primitive and layer, on random inputs of odd sizes, on the kernel
//! emulation (always) and on a real GPU (where one is usable; otherwise the test says why it skips).

use kiln::backend::{self, RawTensor};
use kiln::testing::{assert_close, check_parity, random_away_from_zero};
use kiln::{ops, ConvGeometry, DType, Device, GemmSpec, Tensor, Window2d};
use rand::rngs::StdRng;
use rand::SeedableRng;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(random_away_from_zero(&mut rng, n, 1e-3), shape, Device::Cpu).unwrap()
}

fn on(t: &Tensor, d: Device) -> Tensor {
    t.to_device(d).unwrap()
}

#[track_caller]
fn same(gpu: &RawTensor, cpu: &RawTensor) {
    assert_eq!(gpu.shape(), cpu.shape());
    match cpu.dtype() {
        DType::F32 => assert_close(
            &gpu.to_vec::<f32>().unwrap(),
            &cpu.to_vec::<f32>().unwrap(),
            ATOL,
            RTOL,
        ),
        DType::I32 => assert_eq!(gpu.to_vec::<i32>().unwrap(), cpu.to_vec::<i32>().unwrap()),
        DType::U8 => assert_eq!(gpu.to_vec::<u8>().unwrap(), cpu.to_vec::<u8>().unwrap()),
        other => unreachable!("the parity ops here give f32, i32 or u8, not {other:?}"),
    }
}

/// Geometries with odd sizes, padding, dilation, stride larger than the kernel, and batch 1.
fn geometries() -> Vec<ConvGeometry> {
    let w = |k, s, p, d| Window2d::square(k, s, p).with_dilation(d);
    [
        ([3, 5, 11, 9], w(3, 1, 1, 1)),
        ([1, 3, 13, 13], w(3, 2, 1, 1)),
        ([2, 4, 15, 11], w(3, 1, 2, 2)),
        ([2, 3, 17, 17], w(2, 3, 0, 1)),
        ([1, 7, 9, 9], w(1, 1, 0, 1)),
        ([2, 2, 10, 12], w(5, 1, 2, 1)),
        ([2, 3, 9, 10], Window2d::same((4, 3), (1, 2))),
    ]
    .into_iter()
    .map(|(s, win)| ConvGeometry::new(s, win, false).unwrap())
    .collect()
}

fn im2col_and_col2im_match_cpu(device: Device) {
    for (i, g) in geometries().iter().enumerate() {
        let x = random(&[g.batch, g.in_channels, g.in_h, g.in_w], i as u64);
        let col = backend::im2col(&x, g).unwrap();
        same(&backend::im2col(&on(&x, device), g).unwrap(), &col);
        let dcol = random(col.shape(), 100 + i as u64);
        same(
            &backend::col2im(&on(&dcol, device), g).unwrap(),
            &backend::col2im(&dcol, g).unwrap(),
        );
    }
}
kiln::test_device!(im2col_and_col2im_match_cpu, gpu);

fn gemm_matches_cpu_for_every_transpose_and_batch_mode(device: Device) {
    for (m, n, k) in [(7, 13, 5), (65, 67, 33), (1, 130, 17), (129, 3, 70)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut spec = GemmSpec::new(m, n, k).batched(3, m * k, k * n, m * n);
            spec.trans_a = ta;
            spec.trans_b = tb;
            let a = random(&[3 * m * k], 1);
            let b = random(&[3 * k * n], 2);
            let cpu = backend::gemm(&spec, 0.5, &a, &b, vec![3, m, n]).unwrap();
            let gpu =
                backend::gemm(&spec, 0.5, &on(&a, device), &on(&b, device), vec![3, m, n]).unwrap();
            same(&gpu, &cpu);
            let reduced = spec.summed_over_batch();
            let cpu = backend::gemm(&reduced, 1.0, &a, &b, vec![m, n]).unwrap();
            let gpu =
                backend::gemm(&reduced, 1.0, &on(&a, device), &on(&b, device), vec![m, n]).unwrap();
            same(&gpu, &cpu);
        }
    }
}
kiln::test_device!(gemm_matches_cpu_for_every_transpose_and_batch_mode, gpu);

fn bias_kernels_match_cpu(device: Device) {
    let (outer, channels, inner) = (3, 7, 37);
    let y = random(&[outer, channels, inner], 1);
    let b = random(&[channels], 2);
    let mut cpu = y.clone();
    backend::bias_add(&mut cpu, &b, outer, channels, inner).unwrap();
    let mut gpu = on(&y, device);
    backend::bias_add(&mut gpu, &on(&b, device), outer, channels, inner).unwrap();
    same(&gpu, &cpu);
    same(
        &backend::bias_grad(&on(&y, device), outer, channels, inner).unwrap(),
        &backend::bias_grad(&y, outer, channels, inner).unwrap(),
    );
}
kiln::test_device!(bias_kernels_match_cpu, gpu);

fn maxpool_matches_cpu(device: Device) {
    for (i, g) in geometries().iter().enumerate() {
        let x = random(&[g.batch, g.in_channels, g.in_h, g.in_w], 10 + i as u64);
        let (y, argmax) = backend::maxpool_fwd(&x, g).unwrap();
        let (gy, gargmax) = backend::maxpool_fwd(&on(&x, device), g).unwrap();
        same(&gy, &y);
        same(&gargmax, &argmax);
        let dy = random(y.shape(), 20 + i as u64);
        same(
            &backend::maxpool_bwd(&on(&dy, device), &gargmax, g).unwrap(),
            &backend::maxpool_bwd(&dy, &argmax, g).unwrap(),
        );
    }
}
kiln::test_device!(maxpool_matches_cpu, gpu);

fn relu_matches_cpu(device: Device) {
    // The kernels take 4 elements per 16-byte access and the rest one by one: sizes with a
    // remainder of 3, none, and fewer than 4 elements in all.
    for shape in [&[3, 5, 7, 11][..], &[2, 4, 4, 4], &[3]] {
        let x = random(shape, 1);
        let (y, mask) = backend::relu_fwd(&x).unwrap();
        let (gy, gmask) = backend::relu_fwd(&on(&x, device)).unwrap();
        same(&gy, &y);
        same(&gmask, &mask);
        let dy = random(shape, 2);
        same(
            &backend::relu_bwd(&on(&dy, device), &gmask).unwrap(),
            &backend::relu_bwd(&dy, &mask).unwrap(),
        );
    }
}
kiln::test_device!(relu_matches_cpu, gpu);

fn softmax_cross_entropy_matches_cpu(device: Device) {
    let logits = random(&[7, 13], 3);
    let labels = Tensor::from_vec((0..7).map(|i| i * 5 % 13).collect(), &[7], Device::Cpu).unwrap();
    let (probs, losses) = backend::softmax_xent_fwd(&logits, &labels).unwrap();
    let (gprobs, glosses) =
        backend::softmax_xent_fwd(&on(&logits, device), &on(&labels, device)).unwrap();
    same(&gprobs, &probs);
    same(&glosses, &losses);
    same(
        &backend::softmax_xent_bwd(&gprobs, &on(&labels, device), 0.3).unwrap(),
        &backend::softmax_xent_bwd(&probs, &labels, 0.3).unwrap(),
    );
    check_parity(
        "softmax_cross_entropy",
        device,
        &[logits],
        ATOL,
        RTOL,
        |t| ops::softmax_cross_entropy(&t[0], &labels.to_device(t[0].device())?),
    );
}
kiln::test_device!(softmax_cross_entropy_matches_cpu, gpu);

fn sgd_matches_cpu(device: Device) {
    let w = random(&[5, 9], 4);
    let g = random(&[5, 9], 5);
    let mut cpu_w = w.clone();
    let mut gpu_w = on(&w, device);
    let mut cpu_opt = kiln::optim::Sgd::new(std::slice::from_ref(&w), 0.1, 0.9, 1e-3).unwrap();
    let mut gpu_opt = kiln::optim::Sgd::new(&[gpu_w.clone()], 0.1, 0.9, 1e-3).unwrap();
    let gg = on(&g, device);
    for _ in 0..3 {
        cpu_opt.step(&mut [&mut cpu_w], &[&g]).unwrap();
        gpu_opt.step(&mut [&mut gpu_w], &[&gg]).unwrap();
    }
    same(&gpu_w, &cpu_w);
}
kiln::test_device!(sgd_matches_cpu, gpu);

fn elementwise_ops_match_cpu(device: Device) {
    let (a, b) = (random(&[3, 7, 5], 1), random(&[3, 7, 5], 2));
    check_parity(
        "add-mul-scale-mean",
        device,
        &[a.clone(), b.clone()],
        ATOL,
        RTOL,
        |t| {
            let prod = ops::mul(&t[0], &ops::add(&t[0], &t[1])?)?;
            ops::add(&ops::scale(&prod, -0.7)?, &t[1])
        },
    );
    same(
        &backend::axpby(0.5, &on(&a, device), -2.0, &on(&b, device)).unwrap(),
        &backend::axpby(0.5, &a, -2.0, &b).unwrap(),
    );
    same(
        &backend::affine(&on(&a, device), 3.0, 0.25).unwrap(),
        &backend::affine(&a, 3.0, 0.25).unwrap(),
    );
    same(
        &backend::sum(&on(&a, device), 0.5).unwrap(),
        &backend::sum(&a, 0.5).unwrap(),
    );
    // In place (batch-norm statistics): the buffer keeps its address, the values match.
    let (mut on_device, mut on_cpu) = (on(&a, device), a.clone());
    backend::axpby_in_place(0.9, &mut on_device, 0.1, &on(&b, device)).unwrap();
    backend::axpby_in_place(0.9, &mut on_cpu, 0.1, &b).unwrap();
    same(&on_device, &on_cpu);
    same(&on_cpu, &backend::axpby(0.9, &a, 0.1, &b).unwrap());
    // A constant made by the fill kernel on the device.
    let filled = backend::full_like(&on(&a, device), &[3, 37], -1.75).unwrap();
    assert_eq!(filled.device(), device);
    same(&filled, &backend::full_like(&a, &[3, 37], -1.75).unwrap());
}
kiln::test_device!(elementwise_ops_match_cpu, gpu);

fn conv2d_layer_matches_cpu_forward_and_backward(device: Device) {
    for (i, g) in geometries().iter().enumerate() {
        let window = g.window();
        let x = random(&[g.batch, g.in_channels, g.in_h, g.in_w], 30 + i as u64);
        let w = random(&[6, g.in_channels, g.kernel_h, g.kernel_w], 40 + i as u64);
        let b = random(&[6], 50 + i as u64);
        if ops::conv2d(&x, &w, Some(&b), window).is_err() {
            continue; // geometries whose stride does not tile the input exactly
        }
        check_parity("conv2d", device, &[x, w, b], ATOL, RTOL, |t| {
            ops::conv2d(&t[0], &t[1], Some(&t[2]), window)
        });
    }
}
kiln::test_device!(conv2d_layer_matches_cpu_forward_and_backward, gpu);

fn max_pool_layer_matches_cpu_forward_and_backward(device: Device) {
    let x = random(&[2, 3, 11, 9], 7);
    for window in [Window2d::square(2, 2, 0), Window2d::square(3, 2, 1)] {
        check_parity(
            "max_pool2d",
            device,
            std::slice::from_ref(&x),
            ATOL,
            RTOL,
            |t| ops::max_pool2d(&t[0], window),
        );
    }
}

/// ceil_mode windows larger than the (padded) input, overhanging it on both sides.
fn max_pool_windows_past_the_input_match_cpu(device: Device) {
    let cases = kiln::testing::pool_windows_past_the_input();
    for (i, (shape, window)) in cases.into_iter().enumerate() {
        let x = random(&shape, 40 + i as u64);
        check_parity(
            "max_pool2d, window past the input",
            device,
            std::slice::from_ref(&x),
            ATOL,
            RTOL,
            |t| ops::max_pool2d(&t[0], window),
        );
    }
}
kiln::test_device!(max_pool_windows_past_the_input_match_cpu, gpu);
kiln::test_device!(max_pool_layer_matches_cpu_forward_and_backward, gpu);

fn linear_layer_matches_cpu_forward_and_backward(device: Device) {
    let (x, w, b) = (random(&[5, 37], 1), random(&[11, 37], 2), random(&[11], 3));
    check_parity("linear", device, &[x, w, b], ATOL, RTOL, |t| {
        ops::linear(&t[0], &t[1], Some(&t[2]))
    });
}
kiln::test_device!(linear_layer_matches_cpu_forward_and_backward, gpu);

fn small_network_gradients_match_cpu(device: Device) {
    let x = random(&[2, 3, 8, 8], 1);
    let w1 = random(&[4, 3, 3, 3], 2);
    let b1 = random(&[4], 3);
    let w2 = random(&[5, 4 * 4 * 4], 4);
    check_parity(
        "conv-relu-pool-linear",
        device,
        &[x, w1, b1, w2],
        ATOL,
        RTOL,
        |t| {
            let h = ops::relu(&ops::conv2d(
                &t[0],
                &t[1],
                Some(&t[2]),
                Window2d::square(3, 1, 1),
            )?)?;
            let h = ops::max_pool2d(&h, Window2d::square(2, 2, 0))?;
            ops::linear(&ops::flatten(&h)?, &t[3], None)
        },
    );
}
kiln::test_device!(small_network_gradients_match_cpu, gpu);
