//! Grouped (and depthwise) convolution and transposed convolution: f64 gradient checks, CPU vs
//! device parity, hand-computed literals, the adjoint identity that defines the transposed
//! convolution, direct-loop references, and bad parameters.

use kiln::testing::{assert_close, check_parity, gradcheck, random_away_from_zero, random_vec};
use kiln::{backend, ops, Device, Error, GemmSpec, Tensor, Window2d};
use rand::rngs::StdRng;
use rand::SeedableRng;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

fn random64(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let values = random_vec::<f64>(&mut rng, shape.iter().product());
    Tensor::from_vec(values, shape, Device::Cpu).unwrap()
}

fn random32(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(random_away_from_zero(&mut rng, n, 1e-3), shape, Device::Cpu).unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(a, b)| a * b).sum()
}

fn dims(t: &Tensor) -> [usize; 4] {
    t.shape().try_into().expect("4-d")
}

/// Padding (top, bottom, left, right) of a window.
fn pads(window: Window2d) -> [usize; 4] {
    [
        window.padding.0,
        window.padding_end.0,
        window.padding.1,
        window.padding_end.1,
    ]
}

/// The textbook grouped cross-correlation by direct loops (no im2col, no GEMM), PyTorch's
/// definition: y[n, k, oh, ow] = b[k] + Σ_{c in k's group, kh, kw} x[n, c, oh·s − p + kh·d, …]
/// · w[k, c − group start, kh, kw], output sizes floored.
fn conv_direct(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
    groups: usize,
) -> Tensor {
    let ([n, c, h, wd], [k, cg, kh_len, kw_len]) = (dims(x), dims(w));
    let (xs, ws) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap());
    let bs = b.map(|b| b.to_vec::<f64>().unwrap());
    let [pt, pb, pl, pr] = pads(window);
    let (sh, sw) = window.stride;
    let (dh, dw) = window.dilation;
    let oh_len = (h + pt + pb - dh * (kh_len - 1) - 1) / sh + 1;
    let ow_len = (wd + pl + pr - dw * (kw_len - 1) - 1) / sw + 1;
    let k_per_group = k / groups;
    let mut y = vec![0.0; n * k * oh_len * ow_len];
    for img in 0..n {
        for o in 0..k {
            let first_c = (o / k_per_group) * cg;
            for oh in 0..oh_len {
                for ow in 0..ow_len {
                    let mut sum = bs.as_ref().map_or(0.0, |b| b[o]);
                    for ci in 0..cg {
                        for kh in 0..kh_len {
                            for kw in 0..kw_len {
                                let ih = (oh * sh + kh * dh) as isize - pt as isize;
                                let iw = (ow * sw + kw * dw) as isize - pl as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xi =
                                    ((img * c + first_c + ci) * h + ih as usize) * wd + iw as usize;
                                sum += xs[xi] * ws[((o * cg + ci) * kh_len + kh) * kw_len + kw];
                            }
                        }
                    }
                    y[((img * k + o) * oh_len + oh) * ow_len + ow] = sum;
                }
            }
        }
    }
    Tensor::from_vec(y, &[n, k, oh_len, ow_len], Device::Cpu).unwrap()
}

/// Transposed convolution by scattering, PyTorch's definition: input pixel (h, w) of channel ci adds
/// x·w[ci, co − group start, kh, kw] to output (h·s − p + kh·d, w·s − p + kw·d) of each channel co of
/// its group; output size (H−1)·s − p_begin − p_end + d·(KH−1) + output_padding + 1.
fn conv_transpose_direct(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    window: Window2d,
    output_padding: (usize, usize),
    groups: usize,
) -> Tensor {
    let ([n, c_in, h, wd], [_, cog, kh_len, kw_len]) = (dims(x), dims(w));
    let (xs, ws) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap());
    let [pt, pb, pl, pr] = pads(window);
    let (sh, sw) = window.stride;
    let (dh, dw) = window.dilation;
    let oh_len = (h - 1) * sh + dh * (kh_len - 1) + output_padding.0 + 1 - pt - pb;
    let ow_len = (wd - 1) * sw + dw * (kw_len - 1) + output_padding.1 + 1 - pl - pr;
    let c_out = cog * groups;
    let ci_per_group = c_in / groups;
    let mut y = vec![0.0; n * c_out * oh_len * ow_len];
    if let Some(b) = b {
        let bs = b.to_vec::<f64>().unwrap();
        for (i, v) in y.iter_mut().enumerate() {
            *v = bs[(i / (oh_len * ow_len)) % c_out];
        }
    }
    for img in 0..n {
        for ci in 0..c_in {
            let first_co = (ci / ci_per_group) * cog;
            for ih in 0..h {
                for iw in 0..wd {
                    let xv = xs[((img * c_in + ci) * h + ih) * wd + iw];
                    for co in 0..cog {
                        for kh in 0..kh_len {
                            for kw in 0..kw_len {
                                let oh = (ih * sh + kh * dh) as isize - pt as isize;
                                let ow = (iw * sw + kw * dw) as isize - pl as isize;
                                if oh < 0
                                    || ow < 0
                                    || oh >= oh_len as isize
                                    || ow >= ow_len as isize
                                {
                                    continue;
                                }
                                let yi = ((img * c_out + first_co + co) * oh_len + oh as usize)
                                    * ow_len
                                    + ow as usize;
                                y[yi] += xv * ws[((ci * cog + co) * kh_len + kh) * kw_len + kw];
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(y, &[n, c_out, oh_len, ow_len], Device::Cpu).unwrap()
}

#[track_caller]
fn same64(actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.shape(), expected.shape());
    assert_close(
        &actual.to_vec::<f64>().unwrap(),
        &expected.to_vec::<f64>().unwrap(),
        1e-12,
        1e-12,
    );
}

/// Grouped convolutions: (x shape, K, groups, window). Exact tiling (conv2d's rule), odd sizes,
/// batch 1, stride 2, padding, dilation, an even kernel with 'same' padding, depthwise (groups = C)
/// with and without a channel multiplier, stride larger than the kernel.
fn grouped_cases() -> Vec<([usize; 4], usize, usize, Window2d)> {
    vec![
        ([2, 4, 7, 9], 6, 2, Window2d::square(3, 2, 1)),
        (
            [1, 3, 8, 7],
            3,
            3,
            Window2d::square(3, 1, 2).with_dilation(2),
        ),
        ([2, 3, 6, 5], 6, 3, Window2d::square(3, 1, 1)),
        ([1, 4, 6, 7], 4, 2, Window2d::same((2, 2), (1, 1))),
        ([1, 5, 5, 6], 5, 5, Window2d::same((4, 3), (1, 2))),
        ([2, 6, 10, 5], 9, 3, Window2d::square(2, 5, 1)),
    ]
}

/// A transposed convolution: (x shape, C_out, groups, window, output_padding).
type TransposedCase = ([usize; 4], usize, usize, Window2d, (usize, usize));

fn transposed_cases() -> Vec<TransposedCase> {
    vec![
        // stride 2 with output_padding 1 and padding 1
        ([2, 3, 4, 5], 2, 1, Window2d::square(3, 2, 1), (1, 1)),
        // groups 2, even kernel, stride 2, output_padding on one axis
        ([1, 4, 3, 4], 6, 2, Window2d::square(2, 2, 0), (0, 1)),
        // dilation 2 with padding, output_padding allowed by the dilation (stride 1)
        (
            [2, 2, 4, 3],
            3,
            1,
            Window2d::square(3, 1, 1).with_dilation(2),
            (1, 1),
        ),
        // output_padding past the end padding and ≥ stride: the extra rows get no window
        (
            [1, 2, 3, 4],
            2,
            2,
            Window2d::square(2, 1, 0).with_dilation(3),
            (2, 1),
        ),
        // stride larger than the kernel, asymmetric padding, depthwise
        (
            [2, 3, 3, 3],
            3,
            3,
            Window2d::new((2, 3), (3, 2), (0, 0)).with_padding(1, 0, 0, 2),
            (2, 1),
        ),
    ]
}

fn kernel_of(window: Window2d) -> (usize, usize) {
    window.kernel
}

#[test]
fn grouped_conv_gradients() {
    for (i, (shape, k, groups, window)) in grouped_cases().into_iter().enumerate() {
        let seed = 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let x = random64(&shape, seed);
        let w = random64(&[k, shape[1] / groups, kh, kw], seed + 1);
        let b = random64(&[k], seed + 2);
        gradcheck("conv2d_groups", &[x.clone(), w.clone(), b], |t| {
            ops::conv2d_groups(&t[0], &t[1], Some(&t[2]), window, groups)
        });
        gradcheck("conv2d_groups without bias", &[x, w], |t| {
            ops::conv2d_groups(&t[0], &t[1], None, window, groups)
        });
    }
}

#[test]
fn transposed_conv_gradients() {
    for (i, (shape, c_out, groups, window, op)) in transposed_cases().into_iter().enumerate() {
        let seed = 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let x = random64(&shape, seed);
        let w = random64(&[shape[1], c_out / groups, kh, kw], seed + 1);
        let b = random64(&[c_out], seed + 2);
        gradcheck("conv_transpose2d", &[x.clone(), w.clone(), b], |t| {
            ops::conv_transpose2d(&t[0], &t[1], Some(&t[2]), window, op, groups)
        });
        gradcheck("conv_transpose2d without bias", &[x, w], |t| {
            ops::conv_transpose2d(&t[0], &t[1], None, window, op, groups)
        });
    }
}

fn grouped_conv_matches_cpu_on_devices(device: Device) {
    for (i, (shape, k, groups, window)) in grouped_cases().into_iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let inputs = [
            random32(&shape, seed),
            random32(&[k, shape[1] / groups, kh, kw], seed + 1),
            random32(&[k], seed + 2),
        ];
        check_parity("conv2d_groups", device, &inputs, ATOL, RTOL, |t| {
            ops::conv2d_groups(&t[0], &t[1], Some(&t[2]), window, groups)
        });
    }
}
kiln::test_device!(grouped_conv_matches_cpu_on_devices, gpu);

fn transposed_conv_matches_cpu_on_devices(device: Device) {
    for (i, (shape, c_out, groups, window, op)) in transposed_cases().into_iter().enumerate() {
        let seed = 200 + 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let inputs = [
            random32(&shape, seed),
            random32(&[shape[1], c_out / groups, kh, kw], seed + 1),
            random32(&[c_out], seed + 2),
        ];
        check_parity("conv_transpose2d", device, &inputs, ATOL, RTOL, |t| {
            ops::conv_transpose2d(&t[0], &t[1], Some(&t[2]), window, op, groups)
        });
    }
}
kiln::test_device!(transposed_conv_matches_cpu_on_devices, gpu);

/// The GEMM's group level on its own: the three products a grouped convolution makes (shared A
/// per group, batch-major C; transposed A; weight gradient summed over the batch), odd sizes that
/// straddle the 64x64 tiles.
fn grouped_gemm_matches_cpu_on_devices(device: Device) {
    for (m, n, k) in [(3, 70, 9), (65, 13, 7), (1, 129, 18)] {
        let (batch, groups) = (3, 4);
        let (mk, kn, mn) = (m * k, k * n, m * n);
        let forward = GemmSpec::new(m, n, k)
            .batched(batch, 0, groups * kn, groups * mn)
            .grouped(groups, mk, kn, mn);
        let transposed = forward.transpose_a();
        let weight_grad = GemmSpec::new(m, n, k)
            .transpose_b()
            .batched(batch, groups * mk, groups * kn, 0)
            .grouped(groups, mk, kn, mn)
            .summed_over_batch();
        let a = random32(&[batch * groups * mk], 1);
        let b = random32(&[batch * groups * kn], 2);
        for (spec, out) in [
            (forward, vec![batch, groups, m, n]),
            (transposed, vec![batch, groups, m, n]),
            (weight_grad, vec![groups, m, n]),
        ] {
            let cpu = backend::gemm(&spec, 0.5, &a, &b, out.clone()).unwrap();
            let dev = backend::gemm(
                &spec,
                0.5,
                &a.to_device(device).unwrap(),
                &b.to_device(device).unwrap(),
                out,
            )
            .unwrap();
            assert_close(
                &dev.to_vec::<f32>().unwrap(),
                &cpu.to_vec::<f32>().unwrap(),
                ATOL,
                RTOL,
            );
        }
    }
}
kiln::test_device!(grouped_gemm_matches_cpu_on_devices, gpu);

/// Block replication by hand: with stride 2 and a 2x2 kernel of ones, each input pixel v writes
/// v to its own 2x2 output block and the blocks do not overlap.
fn transposed_conv_stride_2_replicates_blocks(device: Device) {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2], device).unwrap();
    let w = Tensor::from_vec(vec![1.0f32; 4], &[1, 1, 2, 2], device).unwrap();
    let y = ops::conv_transpose2d(&x, &w, None, Window2d::square(2, 2, 0), (0, 0), 1).unwrap();
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let expected = [
        1.0, 1.0, 2.0, 2.0,
        1.0, 1.0, 2.0, 2.0,
        3.0, 3.0, 4.0, 4.0,
        3.0, 3.0, 4.0, 4.0,
    ];
    assert_eq!(y.to_vec::<f32>().unwrap(), expected, "{device}");
}
kiln::test_device!(transposed_conv_stride_2_replicates_blocks);

/// Overlapping windows by hand: with stride 1 the 2x2 blocks of ones overlap; each output pixel is
/// the sum of the input pixels whose block covers it, e.g. the centre 1+2+3+4 = 10, the top middle
/// 1+2 = 3, the left middle 1+3 = 4.
fn transposed_conv_stride_1_sums_overlaps(device: Device) {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2], device).unwrap();
    let w = Tensor::from_vec(vec![1.0f32; 4], &[1, 1, 2, 2], device).unwrap();
    let y = ops::conv_transpose2d(&x, &w, None, Window2d::square(2, 1, 0), (0, 0), 1).unwrap();
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    let expected = [1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0];
    assert_eq!(y.to_vec::<f32>().unwrap(), expected, "{device}");
    // With output_padding 1 (allowed at stride 2) the extra row and column get only the bias.
    let b = Tensor::from_vec(vec![0.5f32], &[1], device).unwrap();
    let y = ops::conv_transpose2d(&x, &w, Some(&b), Window2d::square(2, 2, 0), (1, 1), 1).unwrap();
    assert_eq!(y.shape(), &[1, 1, 5, 5]);
    let y = y.to_vec::<f32>().unwrap();
    assert_eq!(&y[20..], &[0.5; 5], "{device}: bottom row");
    assert_eq!(y[4], 0.5, "{device}: right column");
    assert_eq!(y[0], 1.5, "{device}");
}
kiln::test_device!(transposed_conv_stride_1_sums_overlaps);

/// The definition of the transposed convolution: <conv(x, w), y> = <x, conv_transpose(y, w)> for
/// every x, y (f64), and conv_transpose(r, w) is the tape's gradient of Σ conv(x, w) ⊙ r.
#[test]
fn transposed_conv_is_the_adjoint_of_conv() {
    for (i, (shape, k, groups, window)) in grouped_cases().into_iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let x = random64(&shape, seed).with_grad();
        let w = random64(&[k, shape[1] / groups, kh, kw], seed + 1);
        let y = ops::conv2d_groups(&x, &w, None, window, groups).unwrap();
        let r = random64(y.shape(), seed + 2);
        let back = ops::conv_transpose2d(&r, &w, None, window, (0, 0), groups).unwrap();
        assert_eq!(back.shape(), x.shape(), "case {i}");
        let (lhs, rhs) = (dot(&y, &r), dot(&x, &back));
        assert!(
            (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
            "case {i}: <conv(x), r> = {lhs}, <x, conv_transpose(r)> = {rhs}"
        );
        let grads = ops::sum(&ops::mul(&y, &r).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        same64(grads.get(&x).unwrap(), &back);
    }
}

/// Grouped convolution, conv2d and transposed convolution against the direct loops above.
#[test]
fn ops_match_direct_loops() {
    for (i, (shape, k, groups, window)) in grouped_cases().into_iter().enumerate() {
        let seed = 400 + 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let x = random64(&shape, seed);
        let w = random64(&[k, shape[1] / groups, kh, kw], seed + 1);
        let b = random64(&[k], seed + 2);
        let y = ops::conv2d_groups(&x, &w, Some(&b), window, groups).unwrap();
        same64(&y, &conv_direct(&x, &w, Some(&b), window, groups));
    }
    for (i, (shape, c_out, groups, window, op)) in transposed_cases().into_iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let (kh, kw) = kernel_of(window);
        let x = random64(&shape, seed);
        let w = random64(&[shape[1], c_out / groups, kh, kw], seed + 1);
        let b = random64(&[c_out], seed + 2);
        let y = ops::conv_transpose2d(&x, &w, Some(&b), window, op, groups).unwrap();
        same64(
            &y,
            &conv_transpose_direct(&x, &w, Some(&b), window, op, groups),
        );
    }
}

/// groups = 1 is conv2d, forward and backward.
#[test]
fn one_group_equals_conv2d() {
    let window = Window2d::square(3, 2, 1);
    let x = random64(&[2, 3, 7, 9], 1).with_grad();
    let w = random64(&[4, 3, 3, 3], 2).with_grad();
    let b = random64(&[4], 3).with_grad();
    let y1 = ops::conv2d(&x, &w, Some(&b), window).unwrap();
    let yg = ops::conv2d_groups(&x, &w, Some(&b), window, 1).unwrap();
    same64(&yg, &y1);
    same64(&y1, &conv_direct(&x, &w, Some(&b), window, 1));
    let r = random64(y1.shape(), 4);
    let g1 = ops::sum(&ops::mul(&y1, &r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let gg = ops::sum(&ops::mul(&yg, &r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    for t in [&x, &w, &b] {
        same64(gg.get(t).unwrap(), g1.get(t).unwrap());
    }
}

/// Entries [from, to) of the first axis of a 4-d f64 tensor (filters of a weight).
fn filters(t: &Tensor, from: usize, to: usize) -> Tensor {
    let s = t.shape().to_vec();
    let size: usize = s[1..].iter().product();
    let v = t.to_vec::<f64>().unwrap();
    Tensor::from_vec(
        v[from * size..to * size].to_vec(),
        &[to - from, s[1], s[2], s[3]],
        Device::Cpu,
    )
    .unwrap()
}

/// Channels [from, to) of an NCHW f64 tensor.
fn channels(t: &Tensor, from: usize, to: usize) -> Tensor {
    let s = t.shape().to_vec();
    let plane: usize = s[2..].iter().product();
    let v = t.to_vec::<f64>().unwrap();
    let mut out = Vec::new();
    for n in 0..s[0] {
        out.extend_from_slice(&v[(n * s[1] + from) * plane..(n * s[1] + to) * plane]);
    }
    Tensor::from_vec(out, &[s[0], to - from, s[2], s[3]], Device::Cpu).unwrap()
}

/// Depthwise (groups = C, channel multiplier 2) equals C separate single-channel convolutions,
/// forward and every gradient; likewise the transposed convolution.
#[test]
fn depthwise_equals_per_channel_convolutions() {
    let (c, mult) = (3, 2);
    let window = Window2d::square(3, 2, 1);
    let x = random64(&[2, c, 7, 5], 1).with_grad();
    let w = random64(&[c * mult, 1, 3, 3], 2).with_grad();
    let y = ops::conv2d_groups(&x, &w, None, window, c).unwrap();
    let r = random64(y.shape(), 3);
    let grads = ops::sum(&ops::mul(&y, &r).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let (dx, dw) = (grads.get(&x).unwrap(), grads.get(&w).unwrap());
    for ch in 0..c {
        let xc = channels(&x, ch, ch + 1).with_grad();
        let wc = filters(&w, ch * mult, (ch + 1) * mult).with_grad();
        let yc = ops::conv2d(&xc, &wc, None, window).unwrap();
        same64(&channels(&y, ch * mult, (ch + 1) * mult), &yc);
        let rc = channels(&r, ch * mult, (ch + 1) * mult);
        let gc = ops::sum(&ops::mul(&yc, &rc).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        same64(&channels(dx, ch, ch + 1), gc.get(&xc).unwrap());
        same64(
            &filters(dw, ch * mult, (ch + 1) * mult),
            gc.get(&wc).unwrap(),
        );
    }
    // Transposed: input channel ch feeds output channels [ch·mult, (ch+1)·mult) only.
    let wt = random64(&[c, mult, 3, 3], 4);
    let xt = random64(&[1, c, 4, 3], 5);
    let yt = ops::conv_transpose2d(&xt, &wt, None, window, (1, 0), c).unwrap();
    for ch in 0..c {
        let yc = ops::conv_transpose2d(
            &channels(&xt, ch, ch + 1),
            &filters(&wt, ch, ch + 1),
            None,
            window,
            (1, 0),
            1,
        )
        .unwrap();
        same64(&channels(&yt, ch * mult, (ch + 1) * mult), &yc);
    }
}

/// Gradients are computed only for inputs that need them; the others get none.
#[test]
fn frozen_inputs_get_no_gradient() {
    let window = Window2d::square(3, 1, 1);
    let x = random64(&[1, 4, 5, 5], 1);
    let w = random64(&[4, 2, 3, 3], 2).with_grad();
    let y = ops::conv2d_groups(&x, &w, None, window, 2).unwrap();
    let grads = ops::sum(&y).unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert_eq!(grads.get(&w).unwrap().shape(), w.shape());

    let x = random64(&[1, 4, 5, 5], 1).with_grad();
    let w = random64(&[4, 3, 3, 3], 2);
    let y = ops::conv_transpose2d(&x, &w, None, window, (0, 0), 2).unwrap();
    assert_eq!(y.shape(), &[1, 6, 5, 5]);
    let grads = ops::sum(&y).unwrap().backward().unwrap();
    assert!(grads.get(&w).is_none());
    assert_eq!(grads.get(&x).unwrap().shape(), x.shape());
}

#[track_caller]
fn invalid(result: kiln::Result<Tensor>, what: &str, contains: &str) {
    match result {
        Err(Error::InvalidArgument { what: w, why }) => {
            assert_eq!(w, what, "{why}");
            assert!(why.contains(contains), "{what}: {why}");
        }
        Err(e) => panic!("expected invalid {what}, got {e}"),
        Ok(_) => panic!("expected invalid {what}, got a result"),
    }
}

#[test]
fn bad_grouped_conv_parameters_are_errors() {
    let x = random64(&[1, 4, 5, 5], 1);
    let w = random64(&[6, 2, 3, 3], 2);
    let win = Window2d::square(3, 1, 1);
    let conv = |x: &Tensor, w: &Tensor, b: Option<&Tensor>, g| ops::conv2d_groups(x, w, b, win, g);
    invalid(conv(&x, &w, None, 0), "groups", "at least 1");
    invalid(conv(&x, &w, None, 3), "groups", "the 4 input channels");
    invalid(
        conv(&x, &random64(&[5, 2, 3, 3], 3), None, 2),
        "groups",
        "the 5 output channels",
    );
    invalid(
        conv(&x, &random64(&[6, 4, 3, 3], 3), None, 2),
        "conv2d weight",
        "per group",
    );
    invalid(
        conv(&x, &random64(&[4, 1, 3, 3], 3), None, 2),
        "conv2d weight",
        "per group",
    );
    let err = conv(&x, &w, Some(&random64(&[3], 4)), 2).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    invalid(
        ops::conv2d_groups(&x, &w, None, Window2d::square(2, 1, 1), 2),
        "conv2d window",
        "differs",
    );
    assert!(conv(&x, &w, None, 2).is_ok());
}

#[test]
fn bad_transposed_conv_parameters_are_errors() {
    let x = random64(&[1, 4, 3, 3], 1);
    let w = random64(&[4, 3, 3, 3], 2);
    let ct =
        |w: &Tensor, b: Option<&Tensor>, win, op, g| ops::conv_transpose2d(&x, w, b, win, op, g);
    let s2 = Window2d::square(3, 2, 1);
    invalid(ct(&w, None, s2, (0, 0), 0), "groups", "at least 1");
    invalid(
        ct(&w, None, s2, (0, 0), 3),
        "groups",
        "the 4 input channels",
    );
    invalid(
        ct(&random64(&[2, 3, 3, 3], 3), None, s2, (0, 0), 1),
        "conv_transpose2d weight",
        "input channels",
    );
    let err = ct(&w, Some(&random64(&[3], 4)), s2, (0, 0), 2).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(ct(&w, Some(&random64(&[6], 4)), s2, (0, 0), 2).is_ok());
    // output_padding must be smaller than the stride or the dilation (PyTorch's rule).
    invalid(ct(&w, None, s2, (2, 0), 1), "output padding", "smaller");
    invalid(
        ct(&w, None, Window2d::square(3, 1, 0), (0, 1), 1),
        "output padding",
        "smaller",
    );
    assert!(ct(
        &w,
        None,
        Window2d::square(3, 1, 0).with_dilation(2),
        (1, 1),
        1
    )
    .is_ok());
    // Padding that leaves no output: (3−1)·1 + 2 + 1 = 5 ≤ 3 + 3.
    invalid(
        ct(&w, None, Window2d::square(3, 1, 3), (0, 0), 1),
        "padding",
        "no output",
    );
    invalid(
        ct(&w, None, Window2d::square(3, 0, 0), (0, 0), 1),
        "stride",
        "at least 1",
    );
    invalid(
        ct(
            &w,
            None,
            Window2d::square(3, 1, 0).with_dilation(0),
            (0, 0),
            1,
        ),
        "dilation",
        "at least 1",
    );
    invalid(
        ct(&w, None, Window2d::square(2, 2, 0), (0, 0), 1),
        "conv_transpose2d window",
        "differs",
    );
    let flat = random64(&[4, 3, 3], 5);
    assert!(ops::conv_transpose2d(&flat, &w, None, s2, (0, 0), 1).is_err());
    let x32 = random32(&[1, 4, 3, 3], 6);
    let w32 = random32(&[4, 3, 3, 3], 7)
        .to_device(Device::CudaEmulated)
        .unwrap();
    let err = ops::conv_transpose2d(&x32, &w32, None, s2, (0, 0), 1).unwrap_err();
    assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
}

/// More output matrices than CUDA's 65535 grid z-slices: the kernel walks z in steps of the grid.
/// Slow under emulation (65535 blocks of 256 emulated threads), so run by hand:
/// `cargo test --test conv_ops -- --ignored`.
fn grouped_gemm_past_the_grid_z_limit(device: Device) {
    let (m, n, k, batch, groups) = (2, 3, 2, 3, 21_846); // 65538 output matrices
    let spec = GemmSpec::new(m, n, k)
        .batched(batch, groups * m * k, groups * k * n, groups * m * n)
        .grouped(groups, m * k, k * n, m * n);
    let a = random32(&[batch * groups * m * k], 1);
    let b = random32(&[batch * groups * k * n], 2);
    let out = vec![batch, groups, m, n];
    let cpu = backend::gemm(&spec, 1.0, &a, &b, out.clone()).unwrap();
    let dev = backend::gemm(
        &spec,
        1.0,
        &a.to_device(device).unwrap(),
        &b.to_device(device).unwrap(),
        out,
    )
    .unwrap();
    assert_close(
        &dev.to_vec::<f32>().unwrap(),
        &cpu.to_vec::<f32>().unwrap(),
        ATOL,
        RTOL,
    );
}

// `kiln::test_device!(grouped_gemm_past_the_grid_z_limit, gpu)` written out, for `#[ignore]`.
#[test]
#[ignore]
fn grouped_gemm_past_the_grid_z_limit_emulated() {
    kiln::testing::run_on_device(
        kiln::testing::DeviceKind::Emulated,
        "grouped_gemm_past_the_grid_z_limit_emulated",
        grouped_gemm_past_the_grid_z_limit,
    );
}

#[test]
#[ignore]
fn grouped_gemm_past_the_grid_z_limit_cuda() {
    kiln::testing::run_on_device(
        kiln::testing::DeviceKind::Cuda,
        "grouped_gemm_past_the_grid_z_limit_cuda",
        grouped_gemm_past_the_grid_z_limit,
    );
}
